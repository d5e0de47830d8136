"""B independent reconstructions fitted in one optimizer step (``batching.size=B``; docs/performance.md).

The members are B ordinary single-fit modules (the networks, inputs z, measurements and method states that B
separate runs would build). Their parameters and buffers are stacked with ``torch.func.stack_module_state`` and
one loss, the sum of the members' losses, is minimised: each member's gradient depends only on its own weights,
and Adam works element by element, so every member follows the trajectory of its separate run.
``batching.mode`` says how the members are evaluated: ``vmap`` maps ``functional_call`` over them (each
convolution one grouped convolution; equal to the separate runs up to rounding); ``loop`` calls each member in
turn on views of the stacked state (the separate runs' numbers exactly).

BatchNorm: the running statistics are removed (``replace_all_batch_norm_modules_``) because vmap cannot update
them in place; a fit only ever uses batch statistics (the network is in training mode throughout), so outputs
are unchanged. Methods with their own update rule (``Method.optimization_step`` overridden) are not supported.
With input perturbations (``reg_noise_std``, Self-Guided DIP) each member draws its own noise, but not from the
stream its separate run would use. Channels-last applies in ``loop`` mode only, compilation never. bf16: in
``loop`` mode by autocast, as a separate run; in ``vmap`` mode (where autocast has no effect) with
``performance.autocast=true`` by casting each member's network weights and input to bf16 inside the vmapped
call (``Bf16Forward``; the fp32 stacked weights stay the optimizer's master copy, the loss is fp32).
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import lightning as L
import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap
from torch.utils._pytree import tree_map

from untrained.callbacks.base import ReportingCallback
from untrained.errors import UserError
from untrained.fit.base import TrackedFit
from untrained.fit.loop import step_tools
from untrained.fit.module import UntrainedModule
from untrained.fit.tracker import Tracker
from untrained.methods.base import Method, StepOutput
from untrained.networks.base import Network
from untrained.problem import InverseProblem
from untrained.speed.policy import FORWARD_SWITCHES, Performance
from untrained.speed.runner import StepRunner

log = logging.getLogger(__name__)

MODES = ("auto", "vmap", "loop")


class Member(nn.Module):
    """One reconstruction as a single module, so that its whole state can be stacked and swapped in."""

    def __init__(self, problem: InverseProblem, network: nn.Module, method: Method):
        super().__init__()
        self.problem, self.network, self.method = problem, network, method

    def forward(self, step: int, loss: torch.Tensor | None = None, output: torch.Tensor | None = None):
        """Without ``output``: (loss, output, logs) of the training loss. With the step's ``loss`` and
        ``output``: the method's state update after the optimizer step, returning (estimate, PSNR).
        (``functional_call`` only calls ``forward``, hence the two modes.)"""
        if output is None:
            out = self.method.training_loss(self.network, self.problem, step)
            return out.loss, out.output, out.logs
        with torch.no_grad():
            estimate = self.method.after_step(self.network, self.problem, step, StepOutput(loss, output))
            psnr = self.problem.psnr(estimate) if self.problem.has_ground_truth else torch.full((), math.nan)
        return estimate, psnr


class Bf16Forward:
    """A network's ``compute`` on a bf16 input (its weights come in bf16, ``BatchedModule.members_call``), output
    back in fp32 for the loss and the operators: bf16 convolutions inside vmap, where autocast does nothing."""

    def __init__(self, network: Network):
        self.network = network

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.network.compute(z.to(torch.bfloat16)).float()


def _flat(name: str) -> str:
    return name.replace(".", "__")


class BatchedModule(TrackedFit):
    """Fits the given (not yet trained) :class:`UntrainedModule` members together; see the module docstring."""

    def __init__(
        self,
        members: list[UntrainedModule],
        eval_every: int = 1,
        log_every: int = 25,
        steps_per_batch: int | str = "auto",
        performance: Performance | None = None,
        mode: str = "auto",
    ):
        super().__init__(eval_every, log_every, performance)
        if mode not in MODES:
            raise UserError(f"batching.mode must be auto, vmap or loop, got {mode!r}.")
        self.requested_mode = self.mode = mode
        self.bf16_weights: set[str] = set()  # network weights cast to bf16 in vmap mode (performance.autocast)
        if steps_per_batch not in ("auto", 1):
            raise UserError(
                "Batched fits take one optimization step per Lightning batch: set module.steps_per_batch=auto."
            )
        first = members[0]
        if type(first.method).optimization_step is not Method.optimization_step:
            raise UserError(
                f"Method '{first.method.name}' has its own update rule, which batched fits do not support: "
                f"set batching.size=1."
            )
        if any(
            m.problem.image_shape != first.problem.image_shape or m.problem.y.shape != first.problem.y.shape
            for m in members
        ):
            raise UserError(
                "Batched fits need measurements and images of one shape: use one task.size for all members."
            )
        self.members = members  # a plain list: their own tensors are not trained, only the stacked copies
        units = []
        for m in members:
            replace_all_batch_norm_modules_(m.network)
            units.append(Member(m.problem, m.network, m.method))
        self.template = units[0]
        params, buffers = stack_module_state(units)
        self.names = {"params": list(params), "buffers": list(buffers)}
        self.stacked = nn.ParameterDict({_flat(k): nn.Parameter(v.detach()) for k, v in params.items()})
        for key, value in buffers.items():
            self.register_buffer(f"member_{_flat(key)}", value)
        self.tracker = Tracker(len(members), first.problem.image_shape, first.problem.has_ground_truth)
        # The parameter groups of the method (e.g. weights and z at their own learning rates), by name.
        names = {id(p): k for k, p in self.template.named_parameters()}
        groups = first.method.parameter_groups(first.network)
        self.group_names = [[names[id(p)] for p in g["params"]] for g in groups]
        self.group_options = [{k: v for k, v in g.items() if k != "params"} for g in groups]

    # State --------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = {k: self.stacked[_flat(k)] for k in self.names["params"]}
        buffers = {k: getattr(self, f"member_{_flat(k)}") for k in self.names["buffers"]}
        return params, buffers

    @property
    def problem(self) -> InverseProblem:
        """Member 0's problem, for callbacks that show one reconstruction (image logging)."""
        return self.members[0].problem

    @property
    def estimate(self) -> torch.Tensor:
        return self.tracker.estimate

    def configure_optimizers(self):
        method = self.members[0].method
        groups = [
            {"params": [self.stacked[_flat(k)] for k in names], **options}
            for names, options in zip(self.group_names, self.group_options)
        ]
        template = method.configure_optimizer(nn.Linear(1, 1))  # the method's optimizer class and defaults
        return type(template)(groups, **template.defaults)

    # Training -----------------------------------------------------------------------------------
    def members_call(self, step: int, *args):
        """Every member's ``Member.forward(step, *args)`` with its own state: one vmapped call (grouped
        operations), or (``loop``) each member in turn on views of the stacked state, results stacked."""
        params, buffers = self.state()

        def one(p, b, *member_args):
            return functional_call(self.template, (p, b), (step, *member_args))

        if self.mode == "vmap":
            if self.bf16_weights:
                # Manual mixed precision: each member's network weights enter its call in bf16 (autocast has no
                # effect on vmapped operations); the fp32 stacked weights stay the optimizer's master copy.
                params = {k: v.to(torch.bfloat16) if k in self.bf16_weights else v for k, v in params.items()}
            return vmap(one, randomness="different")(params, buffers, *args)
        count = len(self.members)

        def views(stacked: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            per_member = zip(*(t.unbind(0) for t in stacked.values()))
            return [dict(zip(stacked, values)) for values in per_member] if stacked else [{}] * count

        results = [one(p, b, *(a[i] for a in args)) for i, (p, b) in enumerate(zip(views(params), views(buffers)))]
        return tree_map(lambda *values: torch.stack(values), *results)

    def make_runner(self) -> StepRunner:
        first = self.members[0]
        mappable = first.problem.operator.vmappable
        if self.requested_mode == "auto":  # vmap on a GPU, loop on the CPU: docs/performance.md
            self.mode = "vmap" if self.device.type == "cuda" and mappable else "loop"
        elif self.mode == "vmap" and not mappable:
            raise UserError(
                f"batching.mode=vmap cannot map the {type(first.problem.operator).__name__} operator (it runs "
                "outside torch): use batching.mode=loop (or auto), or for CT task.impl=torch."
            )
        wanted = self.performance.resolve(
            self.device,
            first.network,
            first.method.capturable_step,
            first.problem.operator.capturable,
        )
        # bf16 autocast has no effect on vmapped operations (their outputs stay fp32); the loop runs each
        # member's plain operations, which take bf16 and channels-last as its separate run does.
        looped = self.mode == "loop"
        applied = {
            "autocast": wanted["autocast"] and looped,
            "channels_last": wanted["channels_last"] and looped,
            "compile": False,
            "cuda_graphs": wanted["cuda_graphs"],
        }
        # In vmap mode bf16 takes the manual route, bf16 weights and input (Bf16Forward), on request only
        # (performance.autocast=true) until its quality is measured on a GPU (docs/performance.md).
        manual_bf16 = (
            self.performance.autocast is True
            and wanted["autocast"]
            and not looped
            and isinstance(first.network, Network)
        )
        dropped = [
            k
            for k in FORWARD_SWITCHES
            if getattr(self.performance, k) is True and not applied[k] and not (k == "autocast" and manual_bf16)
        ]
        if dropped:
            log.warning(
                "performance.%s not applied to batched fits in %s mode (compilation never; channels-last in "
                "loop mode only).",
                "/".join(dropped),
                self.mode,
            )
        # The members' calls go through the template's network, so its execution is theirs.
        runner = StepRunner(self.batched_step, self.template.network, self.template.problem, self.device, applied)
        if manual_bf16:
            self.bf16_weights = {k for k in self.names["params"] if k.startswith("network.")}
            self.template.network.execution = Bf16Forward(self.template.network)
        return runner

    def performance_report(self) -> dict:
        report = {**super().performance_report(), "batch_mode": self.mode}
        if self.bf16_weights:
            report["autocast"] = True  # as bf16 weights and input (Bf16Forward), not torch.autocast
        return report

    def batched_step(self, step: int, optimizer, backward) -> StepOutput:
        """One optimizer step of every member; ``loss`` holds the B members' losses."""
        optimizer.zero_grad(set_to_none=True)
        losses, outputs, logs = self.members_call(step)
        backward(losses.sum())  # members share no weights: each gets its own gradient
        optimizer.step()
        return StepOutput(losses, outputs, logs)

    def training_step(self, batch, batch_idx):
        step = self.global_step
        out = self.runner.step(step, *step_tools(self))
        estimate, psnr = self.members_call(step, out.loss.detach(), out.output.detach())
        record = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.logs.items()}}
        self.tracker.update(step, estimate, record, psnr if self.evaluates(step) else None, out.output.detach())
        if self.due_for_flush(step):
            self.flush()

    # Results ------------------------------------------------------------------------------------
    @torch.no_grad()
    def unstack(self) -> None:
        """Copy every member's final weights, state, estimate, best iterate and status back to its module."""
        params, buffers = self.state()
        for b, (member, unit) in enumerate(zip(self.members, self.units())):
            member.to(self.device)
            for name, tensor in {**dict(unit.named_parameters()), **dict(unit.named_buffers())}.items():
                source = params.get(name, buffers.get(name))
                if source is not None:
                    tensor.copy_(source[b])
            for name in ("estimate", "best_image", "best_psnr", "best_step"):
                getattr(member.tracker, name)[0].copy_(getattr(self.tracker, name)[b])
            member.tracker.histories[0] = self.tracker.histories[b]
            member.status, member.failure = self.tracker.status[b], self.tracker.failures[b]

    def units(self) -> list[Member]:
        return [Member(m.problem, m.network, m.method) for m in self.members]


class MemberCallbacks(L.Callback):
    """Runs one copy of each reporting callback (early stopping...) per member, on that member's estimate.

    Each copy sees the member's module and a stand-in trainer with no logger; the fit stops when
    every member's copies have asked to stop (a stopped rule freezes its state, so the extra steps
    change nothing for that member).
    """

    def __init__(self, per_member: list[list[ReportingCallback]]):
        self.per_member = per_member
        self.trainers = [SimpleNamespace(global_step=0, logger=None, should_stop=False) for _ in per_member]

    def _each(self, hook: str, trainer, module, *args) -> None:
        for b, callbacks in enumerate(self.per_member):
            member, stand_in = module.members[b], self.trainers[b]
            stand_in.global_step = trainer.global_step
            if hook == "on_step_end":
                member.tracker.estimate[0].copy_(module.tracker.estimate[b])
                member.tracker.output[0].copy_(module.tracker.output[b])
            for callback in callbacks:
                getattr(callback, hook)(stand_in, member, *args)

    def on_train_start(self, trainer, module) -> None:
        for member in module.members:
            member.to(module.device)
        self._each("on_train_start", trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._each("on_step_end", trainer, module, trainer.global_step - 1)  # one step per batch here
        if self.per_member[0] and all(t.should_stop for t in self.trainers):
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self._each("on_train_end", trainer, module)

    # Checkpoints: each member's copies keep their own state (a stopping rule's window, its stop) --------------
    def state_dict(self) -> dict:
        return {"members": [[c.state_dict() for c in callbacks] for callbacks in self.per_member]}

    def load_state_dict(self, state_dict: dict) -> None:
        for callbacks, states in zip(self.per_member, state_dict["members"], strict=True):
            for callback, state in zip(callbacks, states, strict=True):
                callback.load_state_dict(state)

"""Many measurements per process: B independent reconstructions fitted in one optimizer step.

``performance.batch_size=B`` builds B ordinary single-run modules (member b with ``seed + b`` and,
with ``performance.batch_vary=[seed,index]``, ``task.index + b``; or, with
``performance.batch_indices=[i_0, ..., i_{B-1}]``, ``task.index = i_b``): the same networks, inputs z,
measurements and method states that B separate runs would build. Their parameters and buffers are
stacked with ``torch.func.stack_module_state`` and one loss, the sum of the members' losses, is
minimised: each member's gradient depends only on its own weights, and Adam works element by element,
so every member follows the trajectory of its separate run. ``performance.batch_mode`` says how the
members are evaluated: ``vmap`` (the GPU default) maps ``functional_call`` over them, turning each
convolution into one grouped convolution, which agrees with the separate runs up to floating-point
rounding; ``loop`` (the CPU default, where grouped convolutions are slower than B plain ones) calls
each member in turn on views of the stacked state, which gives the separate runs' numbers exactly.
Best iterates are tracked per member on the device; ground-truth-free early-stopping callbacks run
once per member, and the fit stops when every member has stopped.

BatchNorm: the running statistics are removed (``replace_all_batch_norm_modules_``) because vmap
cannot update them in place; a fit only ever uses batch statistics (the network is in training mode
throughout), so outputs are unchanged. Methods that replace ``Method.optimization_step`` (their own
update rules) are not supported. With input perturbations (``reg_noise_std``, Self-Guided DIP) each
member draws its own noise, but not from the stream its separate run would use.

On a GPU the batched step is recorded as one CUDA graph (``fast.StepGraph``) under the same rule as
single runs (``performance.cuda_graphs``). bf16 autocast and channels-last apply in ``loop`` mode, as in
the separate runs (on the CPU: where ``auto`` turns them on, see ``fast``); in ``vmap`` mode they are
off, as autocast has no effect on vmapped operations (torch 2.13: their outputs stay fp32, inside or
around vmap). Compilation is not applied to batched fits.

Each member's outputs go to ``<output_dir>/member_<b>/`` (the files of a single run); the batch
summary goes to ``<output_dir>/metrics.json``. Batched fits are not checkpointed: on Ctrl-C or SIGTERM/SIGUSR1/
SIGUSR2 (``checkpoint.on_signal``) a fit stops after the current step, writes every member's outputs and the
summary with ``status: interrupted``, and exits with 128 + the signal (requeued like a single run); started again,
it starts over.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap
from torch.utils._pytree import tree_map

from untrained.callbacks.base import ReportingCallback
from untrained.callbacks.checkpoint import StopOnSignal
from untrained.callbacks.progress import show_progress
from untrained.errors import UserError, check_integer
from untrained.fast import (
    Performance,
    StepGraph,
    accelerate_network,
    graph_recorded,
    performance_from_config,
    resolve_for,
)
from untrained.methods.base import Method, StepOutput
from untrained.module import StepIndices, UntrainedModule, step_tools
from untrained.outputs import write_json_atomic, write_run_outputs
from untrained.problem import InverseProblem

MAX_BATCH_SIZE = 1024  # members built in one process; each holds its own network, problem and optimizer

log = logging.getLogger(__name__)


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


def _flat(name: str) -> str:
    return name.replace(".", "__")


class BatchedModule(L.LightningModule):
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
        super().__init__()
        if mode not in ("auto", "vmap", "loop"):
            raise UserError(f"performance.batch_mode must be auto, vmap or loop, got {mode!r}.")
        self.requested_mode = self.mode = mode
        if steps_per_batch not in ("auto", 1):
            raise UserError(
                "Batched fits take one optimization step per Lightning batch: set module.steps_per_batch=auto."
            )
        self.performance = performance or Performance(cuda_graphs=False)
        self.settings: dict[str, bool | str] = {}  # the fast-path switches and mode, resolved on the device
        check_integer("module.eval_every", eval_every, 1)
        check_integer("module.log_every", log_every, 1)
        first = members[0]
        if type(first.method).optimization_step is not Method.optimization_step:
            raise UserError(
                f"Method '{first.method.name}' has its own update rule, which batched fits do not support: "
                f"set performance.batch_size=1."
            )
        if any(
            m.problem.image_shape != first.problem.image_shape or m.problem.y.shape != first.problem.y.shape
            for m in members
        ):
            raise UserError(
                "Batched fits need measurements and images of one shape: use one task.size for all members."
            )
        self.automatic_optimization = False
        self.members = members  # a plain list: their own tensors are not trained, only the stacked copies
        self.eval_every, self.log_every = eval_every, log_every
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
        count, image = len(members), torch.zeros(len(members), 1, *first.problem.image_shape)
        self.register_buffer("best_psnr", torch.full((count,), -math.inf))
        self.register_buffer("best_step", torch.full((count,), -1, dtype=torch.long))
        self.register_buffer("best_image", image.clone())
        self.register_buffer("estimate", image.clone())
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.finite = [True] * count
        self.failures: list[str | None] = [None] * count
        # The parameter groups of the method (e.g. weights and z at their own learning rates), by name.
        names = {id(p): k for k, p in self.template.named_parameters()}
        self.group_names = [[names[id(p)] for p in g["params"]] for g in first.method.parameter_groups(first.network)]
        self.group_options = [
            {k: v for k, v in g.items() if k != "params"} for g in first.method.parameter_groups(first.network)
        ]

    # State --------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = {k: self.stacked[_flat(k)] for k in self.names["params"]}
        buffers = {k: getattr(self, f"member_{_flat(k)}") for k in self.names["buffers"]}
        return params, buffers

    @property
    def problem(self) -> InverseProblem:
        """Member 0's problem, for callbacks that show one reconstruction (image logging)."""
        return self.members[0].problem

    def train_dataloader(self):
        steps = self.trainer.max_steps
        if steps is None or steps < 1:
            raise ValueError("trainer.max_steps must be a positive number of optimization steps.")
        return torch.utils.data.DataLoader(StepIndices(), batch_size=None, num_workers=0)

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
            return vmap(one, randomness="different")(params, buffers, *args)
        count = len(self.members)

        def views(stacked: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            per_member = zip(*(t.unbind(0) for t in stacked.values()))
            return [dict(zip(stacked, values)) for values in per_member] if stacked else [{}] * count

        results = [one(p, b, *(a[i] for a in args)) for i, (p, b) in enumerate(zip(views(params), views(buffers)))]
        return tree_map(lambda *values: torch.stack(values), *results)

    def on_fit_start(self) -> None:
        first = self.members[0]
        if self.requested_mode == "auto":  # measured: see conf/performance/default.yaml
            self.mode = "vmap" if self.device.type == "cuda" else "loop"
        wanted = resolve_for(self.performance, self.device, first.network, first.method, first.problem)
        # bf16 autocast has no effect on vmapped operations (their outputs stay fp32); the loop runs each
        # member's plain operations, which take bf16 and channels-last as its separate run does.
        looped = self.mode == "loop"
        applied = {
            "autocast": wanted["autocast"] and looped,
            "channels_last": wanted["channels_last"] and looped,
            "compile": False,
            "cuda_graphs": wanted["cuda_graphs"],
        }
        dropped = [
            k
            for k in ("autocast", "channels_last", "compile")
            if getattr(self.performance, k) is True and not applied[k]
        ]
        if dropped:
            log.warning(
                "performance.%s not applied to batched fits in %s mode (compilation never; bf16 and "
                "channels-last in loop mode only).",
                "/".join(dropped),
                self.mode,
            )
        accelerate_network(self.template.network, self.device, applied)  # the members' calls go through it
        self.settings = {**applied, "batch_mode": self.mode}
        if applied["cuda_graphs"]:
            self.optimization_step = StepGraph(self.optimization_step)

    def performance_report(self) -> dict:
        """The switches as they ran (a CUDA graph whose recording failed is off)."""
        return {**self.settings, "cuda_graphs": graph_recorded(self.optimization_step)}

    def optimization_step(self, step: int, optimizer, backward) -> StepOutput:
        """One optimizer step of every member; ``loss`` holds the B members' losses."""
        optimizer.zero_grad(set_to_none=True)
        losses, outputs, logs = self.members_call(step)
        backward(losses.sum())  # members share no weights: each gets its own gradient
        optimizer.step()
        return StepOutput(losses, outputs, logs)

    def training_step(self, batch, batch_idx):
        step = self.global_step
        out = self.optimization_step(step, *step_tools(self))
        estimate, psnr = self.members_call(step, out.loss.detach(), out.output.detach())
        self.estimate.copy_(estimate)
        record = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.logs.items()}}
        if self.members[0].problem.has_ground_truth and step % self.eval_every == 0:
            better = psnr > self.best_psnr
            per_member = better.view(-1, *[1] * (estimate.ndim - 1))
            self.best_image.copy_(torch.where(per_member, estimate, self.best_image))
            self.best_step.copy_(torch.where(better, step, self.best_step))
            self.best_psnr.copy_(torch.maximum(psnr, self.best_psnr))
            record["psnr"] = psnr
        self.pending.append((step, record))
        if (step + 1) % self.log_every == 0 or step + 1 >= self.trainer.max_steps:
            self.flush()

    def flush(self, in_step: bool = True) -> None:
        """One host synchronisation: per-member records to the members' histories and the logger.

        ``in_step=False`` outside the training-step hooks (see ``show_progress``)."""
        if not self.pending:
            return
        steps = [s for s, _ in self.pending]
        keys = sorted({k for _, r in self.pending for k in r})
        host = {k: [r[k].tolist() if k in r else None for _, r in self.pending] for k in keys}
        self.pending.clear()
        for b, member in enumerate(self.members):
            for i, step in enumerate(steps):
                row = {k: v[i][b] for k, v in host.items() if v[i] is not None}
                member.history["step"].append(step)
                for k in host:
                    member.history.setdefault(k, []).append(row.get(k))
                if self.logger is not None:
                    self.logger.log_metrics({f"train/{k}/{b}": v for k, v in row.items()}, step=step)
            if self.finite[b] and not math.isfinite(host["loss"][-1][b]):
                self.finite[b] = False
                self.failures[b] = (
                    f"the loss became {host['loss'][-1][b]} at step {steps[-1]}: lower method.lr or check the data"
                )
        bar = {"loss": sum(host["loss"][-1]) / len(self.members)}
        if "psnr" in host and host["psnr"][-1] is not None:
            bar["psnr"] = sum(host["psnr"][-1]) / len(self.members)
        show_progress(self, bar, in_step)
        if not any(self.finite):
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.flush(in_step=False)

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
            member.estimate.copy_(self.estimate[b])
            member.best_image.copy_(self.best_image[b])
            member.best_psnr.copy_(self.best_psnr[b])
            member.best_step.copy_(self.best_step[b])
            member.status = "completed" if self.finite[b] else "failed"
            member.failure = self.failures[b]

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
                member.estimate.copy_(module.estimate[b])
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


def batch_size(cfg: DictConfig) -> int:
    """The number of members: ``performance.batch_size``, or the length of ``performance.batch_indices``."""
    node = cfg.get("performance") or {}
    size, indices = node.get("batch_size", 1), node.get("batch_indices")
    check_integer("performance.batch_size", size, 1, MAX_BATCH_SIZE)
    if indices is None:
        return size
    if len(indices) < 2:
        raise UserError("performance.batch_indices needs two or more task indices; for one, set task.index.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise UserError(f"performance.batch_indices must be whole numbers, e.g. [3,7,12], got {list(indices)}.")
    if size not in (1, len(indices)):
        raise UserError(
            f"performance.batch_size={size} but performance.batch_indices has {len(indices)} entries: "
            f"give only batch_indices."
        )
    return len(indices)


def member_config(cfg: DictConfig, index: int) -> DictConfig:
    """Member ``index``'s config: ``seed + index`` (noise, init, z) and, if asked, ``task.index + index``, or
    the ``index``-th of ``performance.batch_indices``."""
    member = copy.deepcopy(cfg)
    vary = list(cfg.performance.get("batch_vary") or [])
    indices = cfg.performance.get("batch_indices")
    unknown = set(vary) - {"seed", "index"}
    if unknown:
        raise UserError(f"performance.batch_vary may contain seed and index, got {sorted(unknown)}.")
    with open_dict(member):
        member.performance.batch_size = 1
        member.performance.batch_indices = None
        if "seed" in vary:
            member.seed = cfg.seed + index
        if "index" in vary or indices is not None:
            if "index" not in cfg.task:
                raise UserError(
                    f"Task '{cfg.task.get('name')}' has no index: remove index from performance.batch_vary "
                    f"and performance.batch_indices."
                )
            member.task.index = indices[index] if indices is not None else cfg.task.index + index
    return member


def build_batched(cfg: DictConfig) -> tuple[BatchedModule, list[DictConfig], list[L.Callback]]:
    """The batched module, the members' configs, and the callbacks (shared ones + the per-member driver)."""
    from untrained.train import build, build_module

    size = batch_size(cfg)
    configs = [member_config(cfg, b) for b in range(size)]
    performance = performance_from_config(cfg)
    module = BatchedModule(
        [build_module(c) for c in configs],
        **cfg.module,
        performance=performance,
        mode=cfg.performance.get("batch_mode", "auto"),
    )
    reporting, shared = [], []
    for b in range(size):
        built = [build(c, "callbacks") for c in (configs[b].get("callbacks") or {}).values() if c is not None]
        reporting.append([c for c in built if isinstance(c, ReportingCallback)])
        if b == 0:
            shared = [c for c in built if not isinstance(c, ReportingCallback)]
    return module, configs, shared + [MemberCallbacks(reporting)]


def train_batched(cfg: DictConfig) -> dict:
    """Fit ``performance.batch_size`` members together; write each member's outputs and a batch summary."""
    from untrained.train import build, close_experiment, device_name, exit_code, run_report

    output_dir = Path(cfg.paths.output_dir)
    module, configs, callbacks = build_batched(cfg)
    members, size = module.members, len(module.members)
    reporting = callbacks[-1].per_member
    checkpoint_cfg = cfg.get("checkpoint")  # its signal options; a batched fit has no checkpoint to save or resume
    stopper = (
        StopOnSignal(checkpoint_cfg.get("on_signal", True), checkpoint_cfg.get("requeue", True))
        if checkpoint_cfg
        else None
    )
    callbacks += [stopper] if stopper else []
    logger = build(cfg.get("logger"), "logger") or False
    plugins = {"plugins": [SLURMEnvironment(auto_requeue=False)]} if stopper and SLURMEnvironment.detect() else {}
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=logger, **plugins)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    start = time.perf_counter()
    try:
        trainer.fit(module)
    finally:
        if stopper:
            stopper.restore_handlers()
    wall_time = time.perf_counter() - start
    module.unstack()
    interrupted_by = stopper.interrupted_by if stopper else None

    results = []
    for b, (member, member_cfg) in enumerate(zip(members, configs)):
        if interrupted_by and member.status == "completed":
            member.status = "interrupted"
        metrics, images = run_report(member_cfg, member, trainer, wall_time, reporting[b])
        metrics.update(member=b, batch_size=size, task_index=member_cfg.task.get("index"))
        if interrupted_by:
            metrics["interrupted_by"] = interrupted_by
        write_run_outputs(output_dir / f"member_{b}", member, metrics, images)
        results.append(metrics)
    finished = [m for m in results if m["status"] != "failed"]
    status = ("interrupted" if interrupted_by else "completed") if finished else "failed"
    summary = {
        "status": status,
        "batch_size": size,
        "steps": int(trainer.global_step),
        "wall_time_s": wall_time,
        "seconds_per_step": wall_time / max(trainer.global_step, 1),
        "reconstructions_per_hour": size * 3600 / wall_time if wall_time > 0 else None,
        "members": results,
        "device": device_name(trainer),
        "performance": module.performance_report(),
        **({"interrupted_by": interrupted_by} if interrupted_by else {}),
    }
    for key in ("best_psnr", "final_psnr"):
        values = [m[key] for m in finished if key in m]
        if values:
            summary[key] = sum(values) / len(values)
    write_json_atomic(summary, output_dir / "metrics.json")
    if logger:
        logger.finalize("success" if status == "completed" else "failed")
        close_experiment(logger, exit_code(status, stopper and stopper.interrupted))
    if interrupted_by:
        log.warning(
            "Interrupted by %s at step %d of %d: every member's outputs are in %s (batched fits are not "
            "checkpointed: started again, the fit starts over)",
            interrupted_by,
            summary["steps"],
            trainer.max_steps,
            output_dir,
        )
        stopper.exit_after_signal()
    log.info("Finished %d members x %d steps in %.1f s. Outputs: %s", size, summary["steps"], wall_time, output_dir)
    return summary

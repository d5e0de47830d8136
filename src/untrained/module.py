"""The one LightningModule: fits an untrained network to one measurement, one optimizer step per step.

Metrics stay on the device: PSNR is computed every ``eval_every`` steps and the best ("oracle")
iterate is tracked with ``torch.where``; values reach the host, the logger and the progress bar
only every ``log_every`` steps (one synchronisation), so logging costs a small fraction of a step.
"""

from __future__ import annotations

import itertools
import math

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from untrained.callbacks.base import StepCallback
from untrained.callbacks.progress import show_progress
from untrained.errors import UserError, check_integer
from untrained.methods.base import Method, StepOutput
from untrained.problem import InverseProblem
from untrained.rng import rng_states, set_rng_states


class StepIndices(IterableDataset):
    """Endless batch indices: the data never changes, so there is nothing to load, and the fit ends at
    ``trainer.max_steps`` however many steps each batch holds (also after resuming inside a batch)."""

    def __iter__(self):
        return itertools.count()


# Lightning's hooks around backward and the optimizer step: the only work its wrappers add to a fit on one
# device in full precision, besides counting the step.
WRAPPER_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class DirectOptimizer:
    """torch's optimizer stepped without Lightning's wrapper, counting Lightning's step as the wrapper does."""

    def __init__(self, wrapped):
        self.wrapped, self.optimizer = wrapped, wrapped.optimizer

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self._on_before_step()
        self.optimizer.step()
        self._on_after_step()

    def _on_before_step(self) -> None:
        self.wrapped._on_before_step()

    def _on_after_step(self) -> None:
        self.wrapped._on_after_step()


def step_tools(module: L.LightningModule):
    """The optimizer and backward function a module's step uses.

    Lightning's ``optimizer.step()`` and ``manual_backward`` pass through the strategy and the precision
    plugin and call three hooks on every callback, ~0.15 ms per step (measured on a CPU): a tenth of a small
    1D problem's 1.5 ms step. Where they would do nothing but count the step (one device, 32-bit precision, no
    profiler, no callback or module hook among ``WRAPPER_HOOKS``), the step calls torch directly."""
    trainer, wrapped = module.trainer, module.optimizers()
    hooked = any(getattr(type(c), h) is not getattr(L.Callback, h) for c in trainer.callbacks for h in WRAPPER_HOOKS)
    hooked |= any(getattr(type(module), h) is not getattr(L.LightningModule, h) for h in WRAPPER_HOOKS)
    idle = (
        type(trainer.precision_plugin) is Precision
        and isinstance(trainer.strategy, SingleDeviceStrategy)
        and isinstance(trainer.profiler, PassThroughProfiler)
        and not hooked
    )
    return (DirectOptimizer(wrapped), torch.Tensor.backward) if idle else (wrapped, module.manual_backward)


class UntrainedModule(L.LightningModule):
    def __init__(
        self,
        problem: InverseProblem,
        network: nn.Module,
        method: Method,
        eval_every: int = 1,
        log_every: int = 25,
        steps_per_batch: int | str = "auto",
    ):
        super().__init__()
        check_integer("module.eval_every", eval_every, 1)
        check_integer("module.log_every", log_every, 1)
        if steps_per_batch != "auto" and not (isinstance(steps_per_batch, int) and steps_per_batch >= 1):
            raise UserError(f"module.steps_per_batch must be auto or a positive integer, got {steps_per_batch!r}.")
        self.automatic_optimization = False
        self.problem, self.network, self.method = problem, network, method
        self.eval_every, self.log_every = eval_every, log_every
        self.steps_per_batch = steps_per_batch
        if hasattr(network, "fit_to"):  # any image size: crop the network's output to the image (networks/base.py)
            network.fit_to(problem.image_shape)
        method.setup(problem, network)
        image = torch.zeros(1, *problem.image_shape)
        self.register_buffer("best_psnr", torch.tensor(-math.inf))
        self.register_buffer("best_step", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("best_image", image.clone())
        self.register_buffer("estimate", image.clone())
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.history: dict[str, list] = {"step": [], "loss": []}
        self.status, self.failure = "running", None
        self.rng_to_restore: dict | None = None  # set when resuming from a checkpoint
        self.batch_ending = False  # a step callback asked to end the current Lightning batch (end_batch)

    # Data ---------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        steps = self.trainer.max_steps
        if steps is None or steps < 1:
            raise ValueError("trainer.max_steps must be a positive number of optimization steps.")
        return DataLoader(StepIndices(), batch_size=None, num_workers=0)

    def batch_steps(self) -> int:
        """Optimization steps per Lightning batch. ``auto``: ``log_every``, as Lightning's per-batch host work
        (~0.3 ms on a CPU) is a fifth of a small 1D problem's 1.5 ms CPU step and would leave a fast GPU waiting.
        Per-step callbacks (early stopping, images, the preemption checkpoint) still act after every step."""
        return self.log_every if self.steps_per_batch == "auto" else self.steps_per_batch

    def configure_optimizers(self):
        return self.method.configure_optimizer(self.network)

    # Training -----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        step_callbacks = [c for c in self.trainer.callbacks if isinstance(c, StepCallback)]
        optimizer, backward = step_tools(self)
        self.batch_ending = False
        for _ in range(min(self.batch_steps(), self.trainer.max_steps - self.global_step)):
            step = self.global_step
            self.optimization_step(step, optimizer, backward)
            for callback in step_callbacks:
                callback.on_step_end(self.trainer, self, step)
            if self.trainer.should_stop or self.batch_ending:
                break

    def end_batch(self) -> None:
        """End the current Lightning batch after this step (a step callback's request, e.g. to checkpoint)."""
        self.batch_ending = True

    def optimization_step(self, step: int, optimizer, backward) -> None:
        out: StepOutput = self.method.optimization_step(self.network, self.problem, step, optimizer, backward)
        estimate = self.method.after_step(self.network, self.problem, step, out)
        self.estimate.copy_(estimate)
        record = {"loss": out.loss.detach(), **out.logs}
        if self.problem.has_ground_truth and step % self.eval_every == 0:
            record["psnr"] = self.track_best(step, estimate)
        self.pending.append((step, record))
        if (step + 1) % self.log_every == 0 or step + 1 >= self.trainer.max_steps:
            self.flush()

    @torch.no_grad()
    def track_best(self, step: int, estimate: torch.Tensor) -> torch.Tensor:
        value = self.problem.psnr(estimate)
        better = value > self.best_psnr
        self.best_image.copy_(torch.where(better, estimate, self.best_image))
        self.best_step.copy_(torch.where(better, step, self.best_step))
        self.best_psnr.copy_(torch.where(better, value, self.best_psnr))  # a NaN PSNR (divergence) never wins
        return value

    def flush(self, in_step: bool = True) -> None:
        """Bring the pending per-step records to the host and hand them to the logger and progress bar.

        ``in_step=False`` outside the training-step hooks (see ``show_progress``).
        """
        if not self.pending:
            return
        steps = [s for s, _ in self.pending]
        keys = sorted({k for _, r in self.pending for k in r})
        host = {k: [float(r[k]) if k in r else None for _, r in self.pending] for k in keys}
        self.pending.clear()
        for i, step in enumerate(steps):
            row = {f"train/{k}": v[i] for k, v in host.items() if v[i] is not None}
            if self.logger is not None:
                self.logger.log_metrics(row, step=step)
            self.history["step"].append(step)
            # Every list stays aligned with "step", also when a flush (e.g. an early stop) has no PSNR step in it.
            for k in (self.history.keys() | host.keys()) - {"step"}:
                column = self.history.setdefault(k, [None] * (len(self.history["step"]) - 1))
                column.append(host[k][i] if k in host else None)
        last = {k: next((x for x in reversed(v) if x is not None), None) for k, v in host.items()}
        bar = {k: last[k] for k in ("loss", "psnr") if last.get(k) is not None}
        if self.problem.has_ground_truth:
            bar["best"] = float(self.best_psnr)
        show_progress(self, bar, in_step)
        if not math.isfinite(last["loss"]):
            self.fail(f"the loss became {last['loss']} at step {steps[-1]}: lower method.lr or check the data")

    def fail(self, reason: str) -> None:
        self.status, self.failure = "failed", reason
        self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.flush(in_step=False)
        if self.status == "running":
            self.status = "completed"

    # Checkpoints (callbacks/checkpoint.py): buffers and parameters are in the state_dict already -----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["untrained"] = {
            "history": self.history,
            "pending": self.pending,
            "status": self.status,
            "failure": self.failure,
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["untrained"]
        self.history, self.pending = state["history"], state["pending"]
        self.status, self.failure, self.rng_to_restore = state["status"], state["failure"], state["rng"]

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Not in on_load_checkpoint: Lightning draws a seed from the global generator when it starts the
        # dataloader after that, which the uninterrupted run did at step 0, not here.
        if self.rng_to_restore is not None:
            set_rng_states(self.rng_to_restore)
            self.rng_to_restore = None

    # Results ------------------------------------------------------------------------------------
    @torch.no_grad()
    def summary(self) -> dict:
        """Final and best metrics, and the baselines', as plain Python numbers."""
        problem, estimate = self.problem, self.estimate
        steps_done = int(self.global_step)
        result: dict = {"status": self.status, "steps": steps_done}
        if self.failure:
            result["failure"] = self.failure
        result["final_loss"] = float(problem.data_loss(estimate))
        for key, value in problem.extra_metrics(estimate).items():
            result[f"final_{key}"] = float(value)
        if problem.has_ground_truth:
            result.update(final_psnr=float(problem.psnr(estimate)), final_ssim=float(problem.ssim(estimate)))
            if int(self.best_step) >= 0:
                result.update(
                    best_psnr=float(self.best_psnr),
                    best_ssim=float(problem.ssim(self.best_image)),
                    best_step=int(self.best_step),
                )
            for name, image in problem.baselines().items():
                result[f"baseline_{name}_psnr"] = float(problem.psnr(image))
                result[f"baseline_{name}_ssim"] = float(problem.ssim(image))
        return result

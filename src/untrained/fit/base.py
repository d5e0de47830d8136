"""What the single-fit and batched LightningModules share: the step counter as data, the tracker and its
flushes to the logger and progress bar, the fast-path runner built on the device, and how a fit ends."""

from __future__ import annotations

import lightning as L
import torch

from untrained.callbacks.progress import show_progress
from untrained.errors import check_integer
from untrained.fit.loop import step_loader
from untrained.fit.tracker import Tracker
from untrained.rng import rng_states, set_rng_states
from untrained.speed.policy import Performance
from untrained.speed.runner import StepRunner


class TrackedFit(L.LightningModule):
    """Base of the fit modules: subclasses set ``self.tracker`` and implement ``make_runner``."""

    tracker: Tracker

    def __init__(self, eval_every: int = 1, log_every: int = 25, performance: Performance | None = None):
        super().__init__()
        check_integer("module.eval_every", eval_every, 1)
        check_integer("module.log_every", log_every, 1)
        self.automatic_optimization = False
        self.eval_every, self.log_every = eval_every, log_every
        # A module built by hand (not by run.build_module) runs its step as written unless given performance.
        self.performance = performance or Performance.eager()
        self.runner: StepRunner | None = None  # built on the fit's device (on_fit_start)
        self.rng_to_restore: dict | None = None  # set when resuming from a checkpoint

    def train_dataloader(self):
        return step_loader(self.trainer)

    def make_runner(self) -> StepRunner:
        raise NotImplementedError

    def on_fit_start(self) -> None:
        if self.runner is None or self.runner.device != self.device:
            if self.runner is not None:
                self.runner.release()
            self.runner = self.make_runner()
        if self.performance.sync_debug and self.device.type == "cuda":
            # Host synchronisations are expected only every module.log_every steps (the flush).
            torch.cuda.set_sync_debug_mode(self.performance.sync_debug)

    def on_fit_end(self) -> None:
        if self.performance.sync_debug and self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)

    def performance_report(self) -> dict:
        """The fast-path switches as they ran (metrics.json's ``performance``)."""
        return self.runner.report() if self.runner is not None else {}

    def due_for_flush(self, step: int) -> bool:
        return (step + 1) % self.log_every == 0 or step + 1 >= self.trainer.max_steps

    def evaluates(self, step: int) -> bool:
        return self.tracker.has_ground_truth and step % self.eval_every == 0

    def flush(self, in_step: bool = True) -> None:
        """Bring the pending per-step records to the host and hand them to the logger and progress bar; stop
        the fit when every member has failed. ``in_step=False`` outside the training-step hooks (see
        ``show_progress``)."""
        flushed = self.tracker.flush()
        if flushed is None:
            return
        if self.logger is not None:
            for step, row in flushed.logger_rows():
                self.logger.log_metrics(row, step=step)
        show_progress(self, flushed.bar, in_step)
        if self.tracker.all_failed:
            self.trainer.should_stop = True

    def end_batch(self) -> None:
        """End the current Lightning batch after this step (a step callback's request, e.g. to checkpoint); a
        module that takes one step per batch has nothing to do."""

    # Checkpoints (callbacks/checkpoint.py): parameters and buffers (the tracker's too) are in the state_dict
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["untrained"] = {**self.tracker.host_state(), "rng": rng_states()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["untrained"]
        self.tracker.load_host_state(state)
        self.rng_to_restore = state["rng"]

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Not in on_load_checkpoint: Lightning draws a seed from the global generator when it starts the
        # dataloader after that, which the uninterrupted run did at step 0, not here.
        if self.rng_to_restore is not None:
            set_rng_states(self.rng_to_restore)
            self.rng_to_restore = None

    def on_train_end(self) -> None:
        self.flush(in_step=False)
        self.tracker.finish()

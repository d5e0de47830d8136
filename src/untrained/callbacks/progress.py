"""The progress bar: Lightning's tqdm bar showing a fit's latest flushed values.

A module's flush hands its values (loss, PSNR, best PSNR) over with :func:`show_progress`. With this bar
they are kept as plain floats on the module (``module.progress``), which the bar reads when it redraws;
Lightning's ``self.log(..., prog_bar=True)`` spends a noticeable share of a small problem's step in its result
bookkeeping (see docs/performance.md, "Framework overhead"). Any other progress bar
(Lightning's own, e.g. with ``callbacks=none``) still gets them through ``self.log``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Counts optimization steps (of ``trainer.max_steps``), not Lightning batches, which may hold several
    (``module.steps_per_batch``); redraws every ``refresh_rate`` steps."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.total = trainer.max_steps
        self.shown = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        bar, steps = self.train_progress_bar, trainer.global_step
        if bar is None or bar.disable or (steps - self.shown < self.refresh_rate and steps < bar.total):
            return
        self.shown = bar.n = steps
        bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress", {})}


def show_progress(module: L.LightningModule, values: dict[str, float], in_step: bool = True) -> None:
    """Hand ``values`` to the progress bar. ``in_step=False`` outside the training-step hooks, where
    Lightning refuses ``self.log`` (the bar's last values then stay as they were)."""
    module.progress = values
    bar = module.trainer.progress_bar_callback
    if in_step and bar is not None and not isinstance(bar, ProgressBar):
        for key, value in values.items():
            module.log(key, value, prog_bar=True, logger=False, on_step=True, on_epoch=False)

"""Callbacks that act after every optimization step, and those whose results belong in metrics.json."""

from __future__ import annotations

import lightning as L
import torch


class StepCallback(L.Callback):
    """A callback that sees every optimization step.

    A Lightning batch may hold several optimization steps (``module.steps_per_batch``), so per-step
    work belongs in ``on_step_end``, which the module calls after each step (``module.estimate`` is
    that step's estimate), not in ``on_train_batch_end``.
    """

    def on_step_end(self, trainer, module, step: int) -> None:
        """After optimization step ``step`` (0-based); may set ``trainer.should_stop``, or call
        ``module.end_batch()`` to reach the batch-end hooks (checkpoints) after this step."""


class ReportingCallback(StepCallback):
    """A callback that contributes entries to metrics.json and images to the run directory."""

    def report(self, module) -> dict:
        return {}

    def images(self, module) -> dict[str, torch.Tensor]:
        return {}

    def curves(self, module) -> dict[str, tuple[list[int], list[float]]]:
        """Per-step statistics for history.json and the curves figure: name → (steps, values)."""
        return {}

"""Callbacks whose results belong in the run's metrics.json and output images."""

from __future__ import annotations

import lightning as L
import torch


class ReportingCallback(L.Callback):
    """A callback that contributes entries to metrics.json and images to the run directory."""

    def report(self, module) -> dict:
        return {}

    def images(self, module) -> dict[str, torch.Tensor]:
        return {}

"""Callbacks: early-stopping rules, image logging, checkpoints."""

from untrained.callbacks.base import ReportingCallback

__all__ = ["ReportingCallback"]

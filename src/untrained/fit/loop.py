"""The pieces of Lightning's loop a fit uses: an endless step counter as its data, and the step's optimizer and
backward function without Lightning's wrappers where those would only count the step."""

from __future__ import annotations

import itertools

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch.utils.data import DataLoader, IterableDataset


class StepIndices(IterableDataset):
    """Endless batch indices: the data never changes, so there is nothing to load, and the fit ends at
    ``trainer.max_steps`` however many steps each batch holds (also after resuming inside a batch)."""

    def __iter__(self):
        return itertools.count()


def step_loader(trainer: L.Trainer) -> DataLoader:
    steps = trainer.max_steps
    if steps is None or steps < 1:
        raise ValueError("trainer.max_steps must be a positive number of optimization steps.")
    return DataLoader(StepIndices(), batch_size=None, num_workers=0)


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
    plugin and call three hooks on every callback: a noticeable share of a small problem's step
    (docs/performance.md). Where they would do nothing but count the step (one device, 32-bit precision, no
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

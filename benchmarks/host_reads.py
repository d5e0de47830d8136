"""Counting tensor → host reads: on a GPU each is a synchronisation, so counting them on the CPU shows where a
step would wait for the device without needing one (``python -m benchmarks --host-reads``, and the tests)."""

from __future__ import annotations

import sys

from torch.overrides import TorchFunctionMode


class HostSyncCounter(TorchFunctionMode):
    """Counts the tensor → host reads (``item``, ``float()``, ``bool()``, ``tolist``, ``.cpu()``...).

    Reads made by ``torch.optim`` are not counted: they read the optimizers' step counters, which stay on the host
    on a GPU (non-capturable Adam).
    """

    READS = {"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS and "torch/optim/" not in sys._getframe(1).f_code.co_filename:
            self.count += 1
        return func(*args, **(kwargs or {}))

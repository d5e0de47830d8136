"""The fast path: bf16 autocast, channels-last, ``torch.compile`` and CUDA graphs, each switchable.

``conf/performance/default.yaml`` holds the switches. ``auto`` means "on where it is safe": on a CUDA
device for autocast (when the GPU supports bf16), channels-last (2D networks) and compilation; off on
the CPU, where bf16 and compilation rarely pay for themselves. CUDA graphs are opt-in because they
need static shapes and fixed input addresses.

Precision: only the network runs under autocast. Its output is cast back to fp32 before the loss,
so operators where precision matters (FFT, ray transform, data misfit) always run in fp32.

The settings are applied in place by :class:`PerformanceCallback` once Lightning has moved the
module to its device: ``network.forward`` and ``problem.data_loss`` are replaced by wrappers on the
instances, so parameter names, state dicts and checkpoints are those of the plain path.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from untrained.errors import UserError

log = logging.getLogger(__name__)


def _switch(name: str, value) -> str | bool:
    if value != "auto" and not isinstance(value, bool):
        raise UserError(f"performance.{name} must be auto, true or false, got {value!r}.")
    return value


@dataclass
class Performance:
    """The fast-path switches (see ``conf/performance/default.yaml``)."""

    autocast: str | bool = "auto"
    channels_last: str | bool = "auto"
    compile: str | bool = "auto"
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    cuda_graphs: bool = False
    sync_debug: str | None = None

    def __post_init__(self):
        for name in ("autocast", "channels_last", "compile"):
            setattr(self, name, _switch(name, getattr(self, name)))
        if self.sync_debug not in (None, "warn", "error"):
            raise UserError(f"performance.sync_debug must be null, warn or error, got {self.sync_debug!r}.")

    def resolve(self, device: torch.device, network: nn.Module) -> dict[str, bool]:
        """Concrete on/off values on ``device``; explains every request that cannot be honoured there."""
        cuda = device.type == "cuda"
        bf16 = cuda and torch.cuda.is_bf16_supported()
        images = getattr(network, "dim", 2) == 2
        resolved = {
            "autocast": bf16 if self.autocast == "auto" else bool(self.autocast),
            "channels_last": (cuda and images) if self.channels_last == "auto" else bool(self.channels_last),
            "compile": cuda if self.compile == "auto" else bool(self.compile),
            "cuda_graphs": bool(self.cuda_graphs),
        }
        if resolved["channels_last"] and not images:
            log.warning("performance.channels_last ignored: it applies to 2D image networks only.")
            resolved["channels_last"] = False
        if resolved["cuda_graphs"] and not cuda:
            log.warning("performance.cuda_graphs ignored: CUDA graphs need a CUDA device (this run is on %s).", device)
            resolved["cuda_graphs"] = False
        if resolved["cuda_graphs"] and not resolved["compile"]:
            log.warning("performance.cuda_graphs needs performance.compile: compiling with mode 'reduce-overhead'.")
            resolved["compile"] = True
        return resolved

    @property
    def mode(self) -> str | None:
        return "reduce-overhead" if self.cuda_graphs else self.compile_mode


class CompiledWithFallback:
    """``torch.compile(fn)`` that falls back to ``fn`` (eager), with one clear warning, if compilation fails.

    Compilation happens lazily at the first call (and again for new shapes), so that is where errors
    surface; compile errors are raised before the compiled code runs, so running ``fn`` eagerly then
    repeats nothing. A genuine error in ``fn`` is raised again by the eager call.
    """

    def __init__(self, fn: Callable, name: str, mode: str | None = None, backend="inductor"):
        self.eager, self.name = fn, name
        self.compiled = torch.compile(fn, mode=mode, backend=backend)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- any compiler failure means: run eagerly
            self.failed = True
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            log.warning(
                "torch.compile of the %s failed (%s: %s); running it eagerly instead. "
                "Set performance.compile=false to skip compilation.", self.name, type(error).__name__, first_line[:200])
            return self.eager(*args, **kwargs)


def accelerate_network(network: nn.Module, device: torch.device, settings: dict[str, bool], mode: str | None = None,
                       backend: str = "inductor") -> None:
    """Replace ``network.forward`` (on the instance) by the fast path; parameters keep their names."""
    if not any(settings.values()) or getattr(network, "accelerated", False):
        return  # nothing to do, or already done by an earlier fit of the same module
    network.accelerated = True
    if settings["channels_last"]:
        network.to(memory_format=torch.channels_last)
    original = network.forward
    inner = CompiledWithFallback(original, "network", mode, backend) if settings["compile"] else original
    autocast, channels_last, graphs = settings["autocast"], settings["channels_last"], settings["cuda_graphs"]

    def forward(z: torch.Tensor) -> torch.Tensor:
        if channels_last and z.ndim == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            output = inner(z)
        # fp32 and the standard layout for the loss and the operators; a CUDA-graph output is reused by
        # the next replay, so it is copied out.
        output = output.float().contiguous()
        return output.clone() if graphs else output

    network.forward = forward


def accelerate(network: nn.Module, problem: nn.Module, device: torch.device, performance: Performance) -> dict[str, bool]:
    """Apply the fast path to a network and its problem's data loss; returns what was switched on."""
    settings = performance.resolve(device, network)
    accelerate_network(network, device, settings, performance.mode, performance.compile_backend)
    if settings["compile"] and not isinstance(problem.data_loss, CompiledWithFallback):
        problem.data_loss = CompiledWithFallback(problem.data_loss, "data loss", performance.compile_mode,
                                                 performance.compile_backend)
    if any(settings.values()):
        log.info("Fast path on %s: %s", device, ", ".join(k for k, v in settings.items() if v))
    return settings


class PerformanceCallback(L.Callback):
    """Applies :class:`Performance` when the module is on its device (``on_fit_start``)."""

    def __init__(self, performance: Performance):
        self.performance = performance
        self.settings: dict[str, bool] = {}

    def on_fit_start(self, trainer, module) -> None:
        self.settings = accelerate(module.network, module.problem, module.device, self.performance)
        if self.performance.sync_debug and module.device.type == "cuda":
            # Host synchronisations are expected only every module.log_every steps (the flush).
            torch.cuda.set_sync_debug_mode(self.performance.sync_debug)

    def on_fit_end(self, trainer, module) -> None:
        if self.performance.sync_debug and module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)


def performance_from_config(cfg) -> Performance:
    """The ``performance`` config group without its batching keys (those select the batched path)."""
    node = dict(cfg.get("performance") or {})
    for key in ("batch_size", "batch_vary"):
        node.pop(key, None)
    return Performance(**node)


def performance_callbacks(cfg) -> list[L.Callback]:
    return [PerformanceCallback(performance_from_config(cfg))]


class HostSyncCounter(TorchFunctionMode):
    """Counts the tensor → host reads (``item``, ``float()``, ``bool()``, ``tolist``, ``.cpu()``...).

    On a GPU each of these is a host synchronisation; counting them on the CPU shows where a step
    would wait for the device without needing one. Reads made by ``torch.optim`` are not counted:
    they read the optimizers' step counters, which stay on the host on a GPU (non-capturable Adam).
    """

    READS = {"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS and "torch/optim/" not in sys._getframe(1).f_code.co_filename:
            self.count += 1
        return func(*args, **(kwargs or {}))

"""The fast path: bf16 autocast, channels-last, ``torch.compile`` and CUDA graphs, each switchable.

``conf/performance/default.yaml`` holds the switches. ``auto`` means "on where it is safe and pays",
for methods with the standard step (``Method.capturable_step``; not OES, DeepRED, ADP or EDIP
pre-training, whose own update rules were not checked under it):

- on a CUDA device, the CUDA graph of the whole optimization step on operators that stay on the GPU
  (``Operator.capturable``), and with it bf16 autocast (where the GPU supports bf16), channels-last
  (2D networks) and compilation. Without the graph a step is bound by kernel launches, where those
  three measured slower than fp32 eager on an H100.
- on a CPU, channels-last for 2D image networks (in fp32 alone 1.14-1.17x the plain fp32 loop's steps/s for
  the skip net, 1.2x for DRP's, 1.35-1.5x for the deep decoder), and bf16 autocast on top where the CPU has
  bf16 matrix units (Intel AMX; oneDNN runs the bf16 convolutions on its tiles): 2.75-3.1x for the skip net
  and 2.2-2.7x for DRP's, on every 2D task (``benchmarks/results/cpu-amx-fast-path.md``). Compilation stays
  off on the CPU: it took a minute and gave a slower step (0.42 against 0.18 s at 256², skip net, bf16).

bf16 autocast is used by ``auto`` only for networks with ``autocast_safe = True``: those whose fits were
measured to keep their best PSNR within 0.1 dB of fp32 (the skip net, and DRP's one-scale skip net; not
the deep decoder, which lost 0.4 dB).

CUDA graph: a DIP fit repeats one small step thousands of times on fixed shapes, so on a fast GPU the
step is bound by the host launching a few hundred kernels. :class:`StepGraph` records forward, loss,
backward and optimizer update once and replays them with one launch per step.

Precision: only the network runs under autocast. Its output is cast back to fp32 before the loss,
so operators where precision matters (FFT, ray transform, data misfit) always run in fp32.

The settings are applied in place by :class:`PerformanceCallback` once Lightning has moved the
module to its device: ``network.forward`` and ``problem.data_loss`` are replaced by wrappers on the
instances, so parameter names, state dicts and checkpoints are those of the plain path.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from untrained.callbacks.base import ReportingCallback
from untrained.errors import UserError
from untrained.methods.base import StepOutput

log = logging.getLogger(__name__)


def first_line(error: Exception, limit: int = 200) -> str:
    """The first line of an error's message (compiler errors run to pages)."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def _switch(name: str, value) -> str | bool:
    if value != "auto" and not isinstance(value, bool):
        raise UserError(f"performance.{name} must be auto, true or false, got {value!r}.")
    return value


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of unmapping it; returns whether it could.

    A fit frees and allocates the same activation maps every step. By default glibc serves large blocks
    with fresh mappings (always above 32 MiB, e.g. a 128-channel fp32 map at 256²) and trims the freed heap
    top, so every step faults its maps in again: ~300,000 page faults per fp32 step of the 256² skip net.
    Here large blocks come from the heap and stay there. Measured on this CPU (2 cores, 256² skip net,
    one fit per process, ``python -m benchmarks.malloc``): fp32 0.849 → 0.588 s per step, bf16 0.266 → 0.251 s,
    no page faults after the first steps. Process-wide (a fit's process keeps its peak heap); glibc only
    (``performance.reuse_freed_memory``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    trim_threshold, mmap_max = -1, -4  # glibc's M_TRIM_THRESHOLD, M_MMAP_MAX
    return bool(mallopt(mmap_max, 0)) and bool(mallopt(trim_threshold, 1 << 30))


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX), where oneDNN's bf16 convolutions
    outrun fp32 ones. torch exposes the check privately, hence the guard."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe() and torch.backends.mkldnn.is_available())


@dataclass
class Performance:
    """The fast-path switches (see ``conf/performance/default.yaml``)."""

    autocast: str | bool = "auto"
    channels_last: str | bool = "auto"
    compile: str | bool = "auto"
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    cuda_graphs: str | bool = "auto"
    sync_debug: str | None = None
    reuse_freed_memory: bool = True

    def __post_init__(self):
        for name in ("autocast", "channels_last", "compile", "cuda_graphs"):
            setattr(self, name, _switch(name, getattr(self, name)))
        if self.sync_debug not in (None, "warn", "error"):
            raise UserError(f"performance.sync_debug must be null, warn or error, got {self.sync_debug!r}.")
        if not isinstance(self.reuse_freed_memory, bool):
            raise UserError(f"performance.reuse_freed_memory must be true or false, got {self.reuse_freed_memory!r}.")

    def resolve(
        self, device: torch.device, network: nn.Module, method_capturable: bool = True, operator_capturable: bool = True
    ) -> dict[str, bool]:
        """Concrete on/off values on ``device``; explains every request that cannot be honoured there.

        ``method_capturable``: the method's step is the standard one (``Method.capturable_step``);
        ``operator_capturable``: its operator stays on the GPU (``Operator.capturable``). Both are needed
        to record the step as a CUDA graph.
        """
        cuda = device.type == "cuda"
        images = getattr(network, "dim", None) == 2
        # Networks whose fits keep their best PSNR under bf16 (measured) say so: ``autocast_safe``.
        bf16_safe = getattr(network, "autocast_safe", False)
        graph = (
            (cuda and method_capturable and operator_capturable)
            if self.cuda_graphs == "auto"
            else bool(self.cuda_graphs)
        )
        if cuda:
            # Measured on an H100 (benchmarks/results/gpu-*.md): without the CUDA graph a DIP step is bound by
            # kernel launches, and bf16 casts and compiled-code guards made it slower, so auto pairs them with it.
            bf16, layout, compiled = graph and bf16_safe and torch.cuda.is_bf16_supported(), graph and images, graph
        else:
            # Measured on a CPU (benchmarks/results/cpu-*fast-path*.md): channels-last speeds fp32 steps up as
            # well (skip net 1.17x, deep decoder 1.5x); bf16 pays off only with matrix units (AMX).
            layout = device.type == "cpu" and method_capturable and images
            bf16 = layout and bf16_safe and cpu_has_bf16_matrix_units()
            compiled = False
        resolved = {
            "autocast": bf16 if self.autocast == "auto" else bool(self.autocast),
            "channels_last": layout if self.channels_last == "auto" else bool(self.channels_last),
            "compile": compiled if self.compile == "auto" else bool(self.compile),
            "cuda_graphs": graph,
        }
        if resolved["channels_last"] and not images:
            log.warning("performance.channels_last ignored: it applies to 2D image networks only.")
            resolved["channels_last"] = False
        if resolved["cuda_graphs"] and not cuda:
            log.warning("performance.cuda_graphs ignored: CUDA graphs need a CUDA device (this run is on %s).", device)
            resolved["cuda_graphs"] = False
        if resolved["cuda_graphs"] and not (method_capturable and operator_capturable):
            log.warning(
                "performance.cuda_graphs ignored: this method's step changes from step to step "
                "(Method.capturable_step) or its operator leaves the GPU (Operator.capturable)."
            )
            resolved["cuda_graphs"] = False
        return resolved


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
            self.fall_back(error)
            return self.eager(*args, **kwargs)

    def fall_back(self, error: Exception) -> None:
        self.failed = True
        log.warning(
            "torch.compile of the %s failed (%s: %s); running it eagerly instead. "
            "Set performance.compile=false to skip compilation.",
            self.name,
            type(error).__name__,
            first_line(error),
        )

    def probe(self, example: torch.Tensor) -> None:
        """Compile now and run one backward pass on ``example`` (a stateless function only): errors that
        the compiled backward raises, past this wrapper's reach during training, fall back here."""
        try:
            self.compiled(example.detach().requires_grad_()).backward()
        except Exception as error:  # noqa: BLE001
            self.fall_back(error)


def accelerate_network(
    network: nn.Module,
    device: torch.device,
    settings: dict[str, bool],
    mode: str | None = None,
    backend: str = "inductor",
) -> None:
    """Replace ``network.forward`` (on the instance) by the fast path; parameters keep their names."""
    if not any(settings[k] for k in ("autocast", "channels_last", "compile")) or getattr(network, "accelerated", False):
        return  # nothing changes the forward (the CUDA graph wraps the step), or done by an earlier fit of the module
    network.accelerated = True
    if settings["channels_last"]:
        network.to(memory_format=torch.channels_last)
    original = network.forward
    inner = CompiledWithFallback(original, "network", mode, backend) if settings["compile"] else original
    network.compiled_forward = inner if settings["compile"] else None
    autocast, channels_last = settings["autocast"], settings["channels_last"]
    # The autocast weight cache must be off while a CUDA graph records (its casts are replayed instead).
    cache = not settings["cuda_graphs"]

    def forward(z: torch.Tensor) -> torch.Tensor:
        if channels_last and z.ndim == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=cache):
            output = inner(z)
        # fp32 and the standard layout for the loss and the operators.
        return output.float().contiguous()

    network.forward = forward


def accelerate(
    network: nn.Module, problem: nn.Module, device: torch.device, performance: Performance, method
) -> dict[str, bool]:
    """Apply the fast path to a network and its problem's data loss; returns what was switched on.

    The CUDA graph of the step is set up by the caller (:class:`PerformanceCallback`), which owns the step.
    """
    settings = resolve_for(performance, device, network, method, problem)
    accelerate_network(network, device, settings, performance.compile_mode, performance.compile_backend)
    if settings["compile"] and not isinstance(problem.data_loss, CompiledWithFallback):
        problem.data_loss = CompiledWithFallback(
            problem.data_loss, "data loss", performance.compile_mode, performance.compile_backend
        )
        problem.data_loss.probe(torch.zeros(1, *problem.image_shape, device=device))
    if any(settings.values()):
        log.info("Fast path on %s: %s", device, ", ".join(k for k, v in settings.items() if v))
    return settings


class StepGraph:
    """An optimization step recorded once as a CUDA graph and replayed every step.

    Wraps ``step(*args, optimizer, backward) -> StepOutput`` (``Method.optimization_step``, or the
    batched module's vmapped step). The first ``warmup`` steps run eagerly on a side stream (as CUDA
    graph capture requires: lazy state such as Adam's moments and compiled kernels exist before
    recording); the next step is recorded and from then on each step is one replay. Recording freezes
    what the step does, which is why only methods with ``capturable_step`` (fixed learning rates, no
    host reads, no branching on the step) use it. The optimizer runs with ``capturable=True`` so its
    step counter lives on the GPU. If recording fails, one warning is logged and the step runs eagerly
    from then on.

    A replay overwrites its output tensors, so the loss and the logged scalars are copied out; the
    output image is consumed (estimate, best iterate, input update) before the next replay.
    """

    def __init__(self, step: Callable, warmup: int = 3):
        self.eager, self.warmup = step, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: StepOutput | None = None
        self.calls, self.failed = 0, False

    @staticmethod
    def make_capturable(optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            if "capturable" in group and not group["capturable"]:
                group["capturable"] = True
                for param in group["params"]:  # a restored checkpoint's step counters are on the host
                    state = optimizer.state.get(param, {})
                    if torch.is_tensor(state.get("step")):
                        state["step"] = state["step"].to(param.device, torch.float32)

    def __call__(self, *args) -> StepOutput:
        if self.failed:
            return self.eager(*args)
        optimizer = args[-2]
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            self.make_capturable(getattr(optimizer, "optimizer", optimizer))  # Lightning's wrapper → torch's
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.eager(*args)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            try:
                return self.record(*args)
            except Exception as error:  # noqa: BLE001 -- any capture failure means: run eagerly
                self.failed = True
                log.warning(
                    "Recording the optimization step as a CUDA graph failed (%s: %s); running it eagerly. "
                    "Set performance.cuda_graphs=false to skip it.",
                    type(error).__name__,
                    first_line(error),
                )
                return self.eager(*args)
        self.graph.replay()
        # The replay bypasses the optimizer wrapper's hooks, which count Lightning's global step.
        if hasattr(optimizer, "_on_before_step"):
            optimizer._on_before_step()
            optimizer._on_after_step()
        return self.copied(self.static)

    def record(self, *args) -> StepOutput:
        """Record the step (which runs nothing), then replay it once: this step's update."""
        graph = torch.cuda.CUDAGraph()
        args[-2].zero_grad(set_to_none=True)  # gradients are allocated inside the graph's memory pool
        with torch.cuda.graph(graph):
            self.static = self.eager(*args)
        graph.replay()
        self.graph = graph
        return self.copied(self.static)

    @staticmethod
    def copied(out: StepOutput) -> StepOutput:
        return StepOutput(out.loss.detach().clone(), out.output, {k: v.clone() for k, v in out.logs.items()})


def graph_recorded(step) -> bool:
    """Whether ``step`` is a :class:`StepGraph` whose recording succeeded (what ran, for metrics.json)."""
    return isinstance(step, StepGraph) and step.graph is not None


def resolve_for(performance: Performance, device: torch.device, network: nn.Module, method, problem) -> dict[str, bool]:
    """``performance`` resolved for ``method``'s step on ``problem`` (``Method.capturable_step``,
    ``Operator.capturable``)."""
    return performance.resolve(device, network, method.capturable_step, getattr(problem.operator, "capturable", False))


class PerformanceCallback(ReportingCallback):
    """Applies :class:`Performance` when the module is on its device (``on_fit_start``); reports what ran."""

    def __init__(self, performance: Performance):
        self.performance = performance
        self.settings: dict[str, bool] = {}

    def on_fit_start(self, trainer, module) -> None:
        method = module.method
        self.settings = accelerate(module.network, module.problem, module.device, self.performance, method)
        if self.settings["cuda_graphs"] and not isinstance(method.optimization_step, StepGraph):
            method.optimization_step = StepGraph(method.optimization_step)
        if self.performance.sync_debug and module.device.type == "cuda":
            # Host synchronisations are expected only every module.log_every steps (the flush).
            torch.cuda.set_sync_debug_mode(self.performance.sync_debug)

    def on_fit_end(self, trainer, module) -> None:
        if self.performance.sync_debug and module.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)

    def report(self, module) -> dict:
        """The switches as they ran: a CUDA graph whose recording failed, or a compilation that fell back, is off."""
        ran = dict(self.settings)
        if ran.get("cuda_graphs"):
            ran["cuda_graphs"] = graph_recorded(module.method.optimization_step)
        compiled = [getattr(module.network, "compiled_forward", None), module.problem.data_loss]
        if ran.get("compile"):
            ran["compile"] = not any(isinstance(c, CompiledWithFallback) and c.failed for c in compiled)
        return {"performance": ran}


def performance_from_config(cfg) -> Performance:
    """The ``performance`` config group without its batching keys (those select the batched path)."""
    node = dict(cfg.get("performance") or {})
    for key in ("batch_size", "batch_vary", "batch_indices", "batch_mode"):
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

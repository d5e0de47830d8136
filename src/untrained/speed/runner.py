"""The object a fit's module owns to run its optimization steps on the fast path, and that reports what ran.

Built once the module is on its device (``on_fit_start``), from the network, the problem, the step function
(``Method.optimization_step``, or the batched module's step over all members), the ``performance`` switches and
the device. It configures how the network's forward and the data loss run (their declared ``execution``:
``Network.forward`` and ``InverseProblem.data_loss`` run through it when set) and records the step as a CUDA
graph where the policy says so. Nothing is replaced on the objects: the module calls ``runner.step``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from untrained.methods.base import StepOutput
from untrained.networks.base import Network
from untrained.problem import InverseProblem
from untrained.speed.compile import CompiledWithFallback
from untrained.speed.graph import StepGraph, graph_recorded
from untrained.speed.policy import FORWARD_SWITCHES, Performance

log = logging.getLogger(__name__)


class FastForward:
    """A network's ``compute`` with channels-last input, under bf16 autocast and/or compiled; its output in fp32
    and the standard layout for the loss and the operators."""

    def __init__(
        self, network: Network, device: torch.device, settings: dict[str, bool], mode=None, backend="inductor"
    ):
        self.device_type = device.type
        self.autocast, self.channels_last = settings["autocast"], settings["channels_last"]
        self.compiled = CompiledWithFallback(network.compute, "network", mode, backend) if settings["compile"] else None
        self.inner = self.compiled or network.compute
        # The autocast weight cache must be off while a CUDA graph records (its casts are replayed instead).
        self.cache = not settings["cuda_graphs"]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.channels_last and z.ndim == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=self.cache):
            output = self.inner(z)
        return output.float().contiguous()


class StepRunner:
    """Runs ``step_fn(step, optimizer, backward) -> StepOutput`` with the resolved fast-path switches.

    ``settings`` are the switches to apply (``Performance.resolve`` on the device, possibly narrowed by the
    caller, e.g. the batched module); ``report()`` gives them as they ran. ``observers`` (objects with
    ``before_step()`` and ``after_step()``, e.g. a benchmark's clock) are called around every step.
    """

    def __init__(
        self,
        step_fn: Callable[..., StepOutput],
        network: nn.Module,
        problem: InverseProblem,
        device: torch.device,
        settings: dict[str, bool],
        performance: Performance | None = None,
    ):
        performance = performance or Performance()
        self.settings, self.device, self.performance = dict(settings), device, performance
        self.network, self.problem = network, problem
        self.observers: list = []
        if any(settings[k] for k in FORWARD_SWITCHES) and isinstance(network, Network):
            if settings["channels_last"]:
                network.to(memory_format=torch.channels_last)
            network.execution = FastForward(
                network, device, settings, performance.compile_mode, performance.compile_backend
            )
        if settings["compile"]:
            problem.execution = CompiledWithFallback(
                problem.mean_squared_misfit, "data loss", performance.compile_mode, performance.compile_backend
            )
            problem.execution.probe(torch.zeros(1, *problem.image_shape, device=device))
        self.step_fn = StepGraph(step_fn) if settings["cuda_graphs"] else step_fn
        if any(settings.values()):
            log.info("Fast path on %s: %s", device, ", ".join(k for k, v in settings.items() if v))

    @classmethod
    def for_method(cls, network, problem, method, device: torch.device, performance: Performance) -> StepRunner:
        """The runner of a single fit: ``method.optimization_step`` on ``network`` and ``problem``."""
        settings = performance.resolve(device, network, method.capturable_step, problem.operator.capturable)

        def step_fn(step: int, optimizer, backward) -> StepOutput:
            return method.optimization_step(network, problem, step, optimizer, backward)

        return cls(step_fn, network, problem, device, settings, performance)

    def step(self, step: int, optimizer, backward) -> StepOutput:
        for observer in self.observers:
            observer.before_step()
        out = self.step_fn(step, optimizer, backward)
        for observer in self.observers:
            observer.after_step()
        return out

    def report(self) -> dict[str, bool]:
        """The switches as they ran: a CUDA graph whose recording failed, or a compilation that fell back, is off."""
        ran = dict(self.settings)
        if ran.get("cuda_graphs"):
            ran["cuda_graphs"] = graph_recorded(self.step_fn)
        if ran.get("compile"):
            compiled = [getattr(self.network.execution, "compiled", None), self.problem.execution]
            ran["compile"] = not any(isinstance(c, CompiledWithFallback) and c.failed for c in compiled)
        return ran

    def release(self) -> None:
        """Give the network and the problem back their eager execution (e.g. before a fit on another device)."""
        if isinstance(self.network, Network):
            self.network.execution = None
        self.problem.execution = None

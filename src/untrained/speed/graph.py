"""An optimization step recorded once as a CUDA graph and replayed every step."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from untrained.methods.base import StepOutput
from untrained.speed.compile import first_line

log = logging.getLogger(__name__)


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

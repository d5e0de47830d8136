"""Which fast-path switches a run gets: ``conf/performance/default.yaml`` resolved on the run's device.

``auto`` means "on where it is safe and pays", for methods with the standard step (``Method.capturable_step``):

- on a CUDA device: the CUDA graph of the whole optimization step, for operators that stay on the GPU
  (``Operator.capturable``), and with it bf16 autocast, channels-last (2D networks) and compilation. Without the
  graph a step is bound by kernel launches, where those three measured slower than fp32 eager.
- on a CPU: channels-last for 2D networks, and bf16 autocast on top where the CPU has bf16 matrix units (Intel
  AMX); compilation stays off (slower there).

bf16 autocast is used by ``auto`` only for networks that declare ``autocast_safe`` (measured to keep their best
PSNR). Only the network runs under autocast; its output is cast back to fp32, so operators where precision
matters (FFT, ray transform, data misfit) always run in fp32. The measurements behind each rule:
docs/performance.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from untrained.errors import UserError
from untrained.networks.base import Network

log = logging.getLogger(__name__)

FORWARD_SWITCHES = ("autocast", "channels_last", "compile")  # those that change how the network's forward runs


def _switch(name: str, value) -> str | bool:
    if value != "auto" and not isinstance(value, bool):
        raise UserError(f"performance.{name} must be auto, true or false, got {value!r}.")
    return value


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

    @classmethod
    def eager(cls) -> Performance:
        """Every switch off: the step as the method writes it (fp32, eager, no graph)."""
        return cls(autocast=False, channels_last=False, compile=False, cuda_graphs=False)

    @classmethod
    def from_config(cls, node) -> Performance:
        """The ``performance`` config group (a mapping; None: the defaults)."""
        return cls(**dict(node or {}))

    def resolve(
        self, device: torch.device, network: nn.Module, method_capturable: bool = True, operator_capturable: bool = True
    ) -> dict[str, bool]:
        """Concrete on/off values on ``device``; explains every request that cannot be honoured there.

        ``method_capturable``: the method's step is the standard one (``Method.capturable_step``);
        ``operator_capturable``: its operator stays on the GPU (``Operator.capturable``). Both are needed
        to record the step as a CUDA graph.
        """
        cuda = device.type == "cuda"
        declares = isinstance(network, Network)  # a network built on networks.base declares what it takes
        images = declares and network.dim == 2
        bf16_safe = declares and network.autocast_safe
        graph = (
            (cuda and method_capturable and operator_capturable)
            if self.cuda_graphs == "auto"
            else bool(self.cuda_graphs)
        )
        if cuda:
            bf16, layout, compiled = graph and bf16_safe and torch.cuda.is_bf16_supported(), graph and images, graph
        else:
            layout = device.type == "cpu" and method_capturable and images
            bf16 = layout and bf16_safe and cpu_has_bf16_matrix_units()
            compiled = False
        resolved = {
            "autocast": bf16 if self.autocast == "auto" else bool(self.autocast),
            "channels_last": layout if self.channels_last == "auto" else bool(self.channels_last),
            "compile": compiled if self.compile == "auto" else bool(self.compile),
            "cuda_graphs": graph,
        }
        if not declares and any(resolved[k] for k in FORWARD_SWITCHES):
            log.warning(
                "performance.%s ignored: the network (%s) is not built on untrained.networks.base.Network, "
                "which runs the fast path's forward.",
                "/".join(k for k in FORWARD_SWITCHES if resolved[k]),
                type(network).__name__,
            )
            resolved.update(dict.fromkeys(FORWARD_SWITCHES, False))
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

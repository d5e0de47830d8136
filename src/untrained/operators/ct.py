"""Parallel-beam ray transform (ODL + ASTRA) as a batch-first torch operator with autograd.

ODL's adjoint is taken with respect to the weighted inner products of its spaces (cell volumes);
torch's autograd and our dot-product test use the plain Euclidean one, so the backprojection is
rescaled by w_image / w_sinogram. The operator is normalised to ||A||₂ = 1 (``norm`` keeps the
original), so learning rates and regularisation weights transfer between image sizes and view counts.

ODL's spaces are backed by torch tensors (ODL ≥ 1.0): with ``astra_cuda`` they live on the GPU and
ASTRA projects CUDA tensors in place, so a projection makes no host round trip; with ``astra_cpu``
they live on the CPU and GPU inputs are copied there and back.
"""

from __future__ import annotations

import numpy as np
import torch

from untrained.errors import UserError, check_integer
from untrained.operators.base import LinearOperator, operator_norm

FULL_ANGLES = 180  # the views of a full scan over [0, π) that sparse-view subsets are drawn from


def default_impl() -> str:
    return "astra_cuda" if torch.cuda.is_available() else "astra_cpu"


def view_angles(views: int, selection: str = "equispaced", seed: int = 0, full: int = FULL_ANGLES) -> np.ndarray:
    """Indices into ``full`` equispaced angles over [0, π): every (full/views)-th, or a seeded random subset."""
    check_integer("task.views (of the full scan's angles)", views, 1, full)
    if selection == "equispaced":
        return np.round(np.linspace(0, full, views, endpoint=False)).astype(int)
    if selection == "random":
        return np.sort(np.random.default_rng(seed).choice(full, size=views, replace=False))
    raise UserError(f"task.view_selection must be 'equispaced' or 'random', got '{selection}'.")


class _ExternalLinearMap(torch.autograd.Function):
    """y = apply(x) computed outside autograd (ODL/ASTRA), with gradient transpose(grad_y)."""

    @staticmethod
    def forward(ctx, x, linear_map, transpose):
        ctx.maps = (linear_map, transpose)
        return linear_map(x)

    @staticmethod
    def backward(ctx, grad):
        linear_map, transpose = ctx.maps
        return _ExternalLinearMap.apply(grad, transpose, linear_map), None, None


class RayTransform(LinearOperator):
    """(B, 1, n, n) images → (B, 1, views, detectors) sinograms, normalised to unit operator norm."""

    capturable = False  # ASTRA launches its own kernels, outside torch's streams: a CUDA graph cannot record them

    def __init__(
        self,
        size: int = 256,
        views: int = 18,
        view_selection: str = "equispaced",
        seed: int = 0,
        impl: str | None = None,
        extent: float = 1.0,
    ):
        super().__init__()
        import odl
        from odl.applications import tomo

        impl = impl or default_impl()
        if impl == "astra_cuda" and not torch.cuda.is_available():
            raise UserError("task.impl=astra_cuda needs a CUDA GPU: use task.impl=astra_cpu (or null for automatic).")
        self.odl_device = f"cuda:{torch.cuda.current_device()}" if impl == "astra_cuda" else "cpu"
        self.space = odl.uniform_discr(
            [-extent, -extent], [extent, extent], (size, size), dtype="float32", impl="pytorch", device=self.odl_device
        )
        full = tomo.parallel_beam_geometry(self.space, num_angles=FULL_ANGLES)
        self.angle_indices = view_angles(views, view_selection, seed)
        geometry = tomo.Parallel2dGeometry(
            odl.nonuniform_partition(full.angles[self.angle_indices]), full.det_partition
        )
        self.odl_op = tomo.RayTransform(self.space, geometry, impl=impl)
        self.impl, self.views = impl, views
        self.detectors = int(full.det_partition.shape[0])
        self.domain_shape, self.range_shape = (1, size, size), (1, views, self.detectors)
        self.adjoint_scale = float(self.space.weighting.const / self.odl_op.range.weighting.const)
        self.scale = 1.0
        self.norm = operator_norm(self, iterations=30)
        self.scale = 1.0 / self.norm

    def _on_odl_device(self, odl_map, batch: torch.Tensor, scale: float) -> torch.Tensor:
        """``odl_map`` on each item of a (B, 1, ...) batch, on ODL's device, times ``scale``."""
        items = batch.detach().to(self.odl_device, torch.float32)
        out = torch.stack([odl_map(item[0]).data for item in items]).unsqueeze(1) * scale
        return out.to(batch.device, batch.dtype)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return self._on_odl_device(self.odl_op, x, self.scale)

    def _backproject(self, y: torch.Tensor) -> torch.Tensor:
        return self._on_odl_device(self.odl_op.adjoint, y, self.scale * self.adjoint_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return _ExternalLinearMap.apply(x.float(), self._project, self._backproject)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.range_shape:
            raise ValueError(
                f"RayTransform.adjoint expects sinograms of shape (B, {', '.join(map(str, self.range_shape))}), "
                f"got {tuple(y.shape)}."
            )
        return _ExternalLinearMap.apply(y.float(), self._backproject, self._project)

    def fbp(self, y: torch.Tensor, filter_type: str = "Hann", frequency_scaling: float = 1.0) -> torch.Tensor:
        """Filtered back-projection of a (normalised) sinogram batch."""
        from odl.applications import tomo

        fbp_op = tomo.fbp_op(self.odl_op, filter_type=filter_type, frequency_scaling=frequency_scaling)
        return self._on_odl_device(fbp_op, y.float(), 1.0 / self.scale)

"""Parallel-beam ray transform (ODL + ASTRA) as a batch-first torch operator with autograd.

ODL's adjoint is taken with respect to the weighted inner products of its spaces (cell volumes);
torch's autograd and our dot-product test use the plain Euclidean one, so the backprojection is
rescaled by w_image / w_sinogram. The operator is normalised to ||A||₂ = 1 (``norm`` keeps the
original), so learning rates and regularisation weights transfer between image sizes and view counts.
"""

from __future__ import annotations

import numpy as np
import torch

from untrained.errors import UserError
from untrained.operators.base import LinearOperator, operator_norm

FULL_ANGLES = 180  # the views of a full scan over [0, π) that sparse-view subsets are drawn from


def default_impl() -> str:
    return "astra_cuda" if torch.cuda.is_available() else "astra_cpu"


def view_angles(views: int, selection: str = "equispaced", seed: int = 0, full: int = FULL_ANGLES) -> np.ndarray:
    """Indices into ``full`` equispaced angles over [0, π): every (full/views)-th, or a seeded random subset."""
    if not 1 <= views <= full:
        raise UserError(f"task.views must be between 1 and {full}, got {views}.")
    if selection == "equispaced":
        return np.round(np.linspace(0, full, views, endpoint=False)).astype(int)
    if selection == "random":
        return np.sort(np.random.default_rng(seed).choice(full, size=views, replace=False))
    raise UserError(f"task.view_selection must be 'equispaced' or 'random', got '{selection}'.")


class _NumpyLinearMap(torch.autograd.Function):
    """y = apply(x) computed in NumPy, with gradient transpose(grad_y): autograd through a linear map."""

    @staticmethod
    def forward(ctx, x, linear_map, transpose):
        ctx.maps = (linear_map, transpose)
        return linear_map(x)

    @staticmethod
    def backward(ctx, grad):
        linear_map, transpose = ctx.maps
        return _NumpyLinearMap.apply(grad, transpose, linear_map), None, None


class RayTransform(LinearOperator):
    """(B, 1, n, n) images → (B, 1, views, detectors) sinograms, normalised to unit operator norm."""

    capturable = False  # ODL/ASTRA take host arrays: every application is a device → host → device round trip

    def __init__(self, size: int = 256, views: int = 18, view_selection: str = "equispaced", seed: int = 0,
                 impl: str | None = None, extent: float = 1.0):
        super().__init__()
        import odl
        from odl.applications import tomo

        impl = impl or default_impl()
        if impl == "astra_cuda" and not torch.cuda.is_available():
            raise UserError("task.impl=astra_cuda needs a CUDA GPU: use task.impl=astra_cpu (or null for automatic).")
        self.space = odl.uniform_discr([-extent, -extent], [extent, extent], (size, size), dtype="float32")
        full = tomo.parallel_beam_geometry(self.space, num_angles=FULL_ANGLES)
        self.angle_indices = view_angles(views, view_selection, seed)
        geometry = tomo.Parallel2dGeometry(odl.nonuniform_partition(full.angles[self.angle_indices]), full.det_partition)
        self.odl_op = tomo.RayTransform(self.space, geometry, impl=impl)
        self.impl, self.views = impl, views
        self.detectors = int(full.det_partition.shape[0])
        self.domain_shape, self.range_shape = (1, size, size), (1, views, self.detectors)
        self.adjoint_scale = float(self.space.weighting.const / self.odl_op.range.weighting.const)
        self.scale = 1.0
        self.norm = operator_norm(self, iterations=30)
        self.scale = 1.0 / self.norm

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().cpu().numpy()
        out = np.stack([self.odl_op(image[0]).asarray()[None] for image in images])
        return torch.from_numpy(out * self.scale).to(x.device, x.dtype)

    def _backproject(self, y: torch.Tensor) -> torch.Tensor:
        sinograms = y.detach().cpu().numpy()
        out = np.stack([self.odl_op.adjoint(s[0]).asarray()[None] for s in sinograms])
        return torch.from_numpy(out * (self.scale * self.adjoint_scale)).to(y.device, y.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return _NumpyLinearMap.apply(x.float(), self._project, self._backproject)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.range_shape:
            raise ValueError(f"RayTransform.adjoint expects sinograms of shape (B, {', '.join(map(str, self.range_shape))}), "
                             f"got {tuple(y.shape)}.")
        return _NumpyLinearMap.apply(y.float(), self._backproject, self._project)

    def fbp(self, y: torch.Tensor, filter_type: str = "Hann", frequency_scaling: float = 1.0) -> torch.Tensor:
        """Filtered back-projection of a (normalised) sinogram batch."""
        from odl.applications import tomo

        fbp_op = tomo.fbp_op(self.odl_op, filter_type=filter_type, frequency_scaling=frequency_scaling)
        sinograms = y.detach().cpu().numpy() / self.scale
        out = np.stack([fbp_op(s[0]).asarray()[None] for s in sinograms])
        return torch.from_numpy(out.astype(np.float32)).to(y.device)

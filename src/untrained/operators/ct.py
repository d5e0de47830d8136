"""Parallel- and fan-beam ray transforms as batch-first torch operators with autograd, normalised to ||A||₂ = 1.

Two implementations of one geometry (ODL's ``parallel_beam_geometry`` of the image square, a subset of
180 angles over [0, π)), chosen by ``task.impl`` (``ray_transform``):

- ``astra_cpu`` / ``astra_cuda``: ODL's RayTransform with ASTRA. ODL's adjoint is taken with respect to
  the weighted inner products of its spaces (cell volumes); torch's autograd and our dot-product test
  use the plain Euclidean one, so the backprojection is rescaled by w_image / w_sinogram. ODL's spaces
  are backed by torch tensors (ODL ≥ 1.0): with ``astra_cuda`` they live on the GPU and ASTRA projects
  CUDA tensors in place; with ``astra_cpu`` GPU inputs are copied to the host and back.
- ``torch``: the same projector (ASTRA's CPU ``linear`` one, Joseph's method: along each ray, one
  linear interpolation per image row or column) as a sparse system matrix built once in NumPy and
  applied with torch sparse matmuls; the adjoint is exactly its transpose. Pure torch work, so a CUDA
  graph can record it, and vmap maps it (its batch rule folds the mapped dimension into the batch).

The operator is normalised to ||A||₂ = 1 (``norm`` keeps the original), so learning rates and
regularisation weights transfer between image sizes and view counts.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
import torch

from untrained.errors import UserError, check_integer
from untrained.operators.base import LinearOperator, operator_norm

FULL_ANGLES = 180  # the views of a full scan over [0, π) that sparse-view subsets are drawn from
IMPLS = ("astra_cpu", "astra_cuda", "torch", "auto")


def astra_available() -> bool:
    try:
        import astra  # noqa: F401
    except ImportError:
        return False
    return True


def default_impl(impl: str | None = None) -> str:
    """The ray transform ``task.impl`` names. ``null``: ASTRA (astra_cuda on a GPU, else astra_cpu), or the
    torch one where astra-toolbox is not installed. ``auto``: torch, on any device: a CUDA graph can record
    it and vmap map it (not ASTRA), and on one CPU thread it was not slower than astra_cpu at 128² and 256²
    (benchmarks/results/cpu-ct-operator-torch.md)."""
    if impl is not None and impl not in IMPLS:
        raise UserError(f"task.impl must be one of {', '.join(IMPLS)} or null (automatic), got '{impl}'.")
    if impl == "auto" or (impl is None and not astra_available()):
        return "torch"
    if impl is None:
        return "astra_cuda" if torch.cuda.is_available() else "astra_cpu"
    return impl


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


class ParallelBeamTransform(LinearOperator):
    """(B, 1, n, n) images → (B, 1, views, detectors) sinograms, normalised to unit operator norm.

    The geometry: ODL's ``parallel_beam_geometry`` of the square [-extent, extent]² (detector over the
    image's circumscribed circle, Nyquist-sampled), restricted to the selected views of its 180 angles.
    """

    def __init__(self, size: int, views: int, view_selection: str, seed: int, extent: float, odl_device: str):
        super().__init__()
        import odl
        from odl.applications import tomo

        self.odl_device = odl_device
        self.space = odl.uniform_discr(
            [-extent, -extent], [extent, extent], (size, size), dtype="float32", impl="pytorch", device=odl_device
        )
        full = tomo.parallel_beam_geometry(self.space, num_angles=FULL_ANGLES)
        self.angle_indices = view_angles(views, view_selection, seed)
        self.geometry = tomo.Parallel2dGeometry(
            odl.nonuniform_partition(full.angles[self.angle_indices]), full.det_partition
        )
        self.views, self.size, self.extent = views, size, extent
        self.detectors = int(full.det_partition.shape[0])
        self.domain_shape, self.range_shape = (1, size, size), (1, views, self.detectors)
        self.scale = 1.0

    def normalise(self) -> None:
        self.norm = operator_norm(self, iterations=30)
        self.scale = 1.0 / self.norm

    def check_range(self, y: torch.Tensor) -> None:
        if tuple(y.shape[1:]) != self.range_shape:
            shape = ", ".join(map(str, self.range_shape))
            raise ValueError(
                f"{type(self).__name__}.adjoint expects sinograms of shape (B, {shape}), got {tuple(y.shape)}."
            )


class RayTransform(ParallelBeamTransform):
    """ODL's RayTransform with ASTRA (``astra_cpu`` / ``astra_cuda``)."""

    capturable = False  # ASTRA launches its own kernels, outside torch's streams: a CUDA graph cannot record them
    vmappable = False  # nor can vmap map them

    def __init__(
        self,
        size: int = 256,
        views: int = 18,
        view_selection: str = "equispaced",
        seed: int = 0,
        impl: str | None = None,
        extent: float = 1.0,
    ):
        from odl.applications import tomo

        impl = default_impl(impl)
        if impl == "torch":
            raise UserError("RayTransform is the ASTRA operator: build task.impl=torch with ray_transform().")
        if impl == "astra_cuda" and not torch.cuda.is_available():
            raise UserError("task.impl=astra_cuda needs a CUDA GPU: use task.impl=astra_cpu (or null for automatic).")
        odl_device = f"cuda:{torch.cuda.current_device()}" if impl == "astra_cuda" else "cpu"
        super().__init__(size, views, view_selection, seed, extent, odl_device)
        self.odl_op = tomo.RayTransform(self.space, self.geometry, impl=impl)
        self.impl = impl
        self.adjoint_scale = float(self.space.weighting.const / self.odl_op.range.weighting.const)
        self.normalise()

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
        self.check_range(y)
        return _ExternalLinearMap.apply(y.float(), self._backproject, self._project)

    def fbp(self, y: torch.Tensor, filter_type: str = "Hann", frequency_scaling: float = 1.0) -> torch.Tensor:
        """Filtered back-projection of a (normalised) sinogram batch."""
        from odl.applications import tomo

        fbp_op = tomo.fbp_op(self.odl_op, filter_type=filter_type, frequency_scaling=frequency_scaling)
        return self._on_odl_device(fbp_op, y.float(), 1.0 / self.scale)


def joseph_system_matrix(
    size: int, extent: float, angles: np.ndarray, detectors: int, detector_min: float, detector_spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rays, pixels, weights) of the parallel-beam system matrix by Joseph's method (ASTRA's 2D ``linear``
    projector): the ray at angle φ and detector offset s is the line <x, (cos φ, sin φ)> = s of direction
    (-sin φ, cos φ) (ODL's Parallel2dGeometry); it crosses each image column (or row, for the steeper
    angles) once, where it takes the linear interpolation of the two nearest pixel centres along that
    column, times the path length through it, h / |direction component|. Ray index: view × detectors +
    bin; pixel index: row-major over (axis 0, axis 1) of ODL's space."""
    pixel = 2 * extent / size
    centres = -extent + (np.arange(size) + 0.5) * pixel
    offsets = detector_min + (np.arange(detectors) + 0.5) * detector_spacing
    steps = np.broadcast_to(np.arange(size)[None, :], (detectors, size))
    rays, pixels, weights = [], [], []
    for view, angle in enumerate(angles):
        cos, sin = np.cos(angle), np.sin(angle)
        # Step along axis 1 (interpolate along axis 0) where the ray is closer to axis 1, else the converse.
        along_axis_1 = abs(cos) >= abs(sin)
        if along_axis_1:
            crossing = offsets[:, None] * cos - (centres[None, :] - offsets[:, None] * sin) * sin / cos
            length = pixel / abs(cos)
        else:
            crossing = offsets[:, None] * sin + (offsets[:, None] * cos - centres[None, :]) * cos / sin
            length = pixel / abs(sin)
        position = (crossing + extent) / pixel - 0.5  # fractional index of the crossing between pixel centres
        below = np.floor(position).astype(np.int64)
        fraction = position - below
        ray = np.broadcast_to((view * detectors + np.arange(detectors))[:, None], position.shape)
        for index, weight in ((below, 1 - fraction), (below + 1, fraction)):
            inside = (index >= 0) & (index < size) & (weight > 0)
            flat = index * size + steps if along_axis_1 else steps * size + index
            rays.append(ray[inside])
            pixels.append(flat[inside])
            weights.append(length * weight[inside])
    return np.concatenate(rays), np.concatenate(pixels), np.concatenate(weights)


def _torch_csr(matrix) -> torch.Tensor:
    """A SciPy CSR matrix as a torch sparse CSR tensor (float32, int64 indices)."""
    matrix.sum_duplicates()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the matmuls used here are tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            matrix.shape,
            check_invariants=False,
        )


class _SparseLinearMap(torch.autograd.Function):
    """y = M x on flattened batch items (M a sparse CSR matrix), with gradient Mᵀ grad; vmap folds the mapped
    dimension into the batch."""

    @staticmethod
    def forward(x, matrix, transpose, out_shape):
        flat = x.reshape(x.shape[0], -1).T
        return (matrix @ flat).T.reshape(x.shape[0], *out_shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, matrix, transpose, _ = inputs
        ctx.matrices, ctx.in_shape = (matrix, transpose), tuple(x.shape[1:])

    @staticmethod
    def backward(ctx, grad):
        matrix, transpose = ctx.matrices
        return _SparseLinearMap.apply(grad.contiguous(), transpose, matrix, ctx.in_shape), None, None, None

    @staticmethod
    def vmap(info, in_dims, x, matrix, transpose, out_shape):
        if in_dims[0] is None:
            return _SparseLinearMap.apply(x, matrix, transpose, out_shape), None
        x = x.movedim(in_dims[0], 0)
        mapped, batch = x.shape[:2]
        out = _SparseLinearMap.apply(x.reshape(mapped * batch, *x.shape[2:]), matrix, transpose, out_shape)
        return out.reshape(mapped, batch, *out_shape), 0


def _fbp_window(frequency: torch.Tensor, filter_type: str, frequency_scaling: float) -> torch.Tensor:
    """ODL's FBP filters on frequencies normalised to [0, 1], zero above ``frequency_scaling``."""
    name = filter_type.lower()
    if name == "ram-lak":
        window = torch.ones_like(frequency)
    elif name == "shepp-logan":
        window = torch.sinc(frequency / (2 * frequency_scaling))
    elif name == "cosine":
        window = torch.cos(frequency * np.pi / (2 * frequency_scaling))
    elif name == "hamming":
        window = 0.54 + 0.46 * torch.cos(frequency * np.pi / frequency_scaling)
    elif name == "hann":
        window = torch.cos(frequency * np.pi / (2 * frequency_scaling)) ** 2
    else:
        raise UserError(f"The FBP filter must be Ram-Lak, Shepp-Logan, Cosine, Hamming or Hann, got '{filter_type}'.")
    return frequency * window * (frequency <= frequency_scaling)


class TorchRayTransform(ParallelBeamTransform):
    """The parallel-beam ray transform as torch sparse matmuls (``task.impl=torch``): Joseph's projector,
    the projection ASTRA's CPU ``linear`` projector computes (tests/test_ct.py cross-checks them), with
    the exact transpose as adjoint. FBP: ODL's ramp filter (zero-padded to 2·detectors − 1) in torch,
    then this backprojection."""

    capturable = True  # torch's own sparse kernels

    def __init__(
        self,
        size: int = 256,
        views: int = 18,
        view_selection: str = "equispaced",
        seed: int = 0,
        extent: float = 1.0,
    ):
        super().__init__(size, views, view_selection, seed, extent, "cpu")
        self.build_matrices(extent)

    def build_matrices(self, extent: float) -> None:
        """The system matrix of ``self.geometry`` (parallel beam) on the square [-extent, extent]², normalised."""
        size, views = self.size, self.views
        self.impl = "torch"
        partition = self.geometry.det_partition
        rays, pixels, weights = joseph_system_matrix(
            size,
            extent,
            self.geometry.angles,
            self.detectors,
            float(partition.min_pt[0]),
            float(partition.cell_sides[0]),
        )
        shape = (views * self.detectors, size * size)
        matrix = scipy.sparse.csr_matrix((weights.astype(np.float32), (rays, pixels)), shape=shape)
        self.matrix, self.transpose = _torch_csr(matrix), _torch_csr(matrix.T.tocsr())
        # The ODL spaces' cell volumes: FBP's backprojection is ODL's weighted adjoint.
        range_weight = float(self.geometry.partition.extent.prod()) / float(self.geometry.partition.size)
        self.adjoint_scale = float(self.space.weighting.const / range_weight)
        self.angle_span = float(self.geometry.motion_params.length)
        self.register_buffer("angles", torch.from_numpy(self.geometry.angles).float())  # also marks the device
        self.normalise()

    def _apply(self, fn, recurse=True):
        # The sparse matrices are plain attributes (stack_module_state would stack buffers per batch member);
        # .to()/.cuda() move them here.
        super()._apply(fn, recurse)
        self.matrix, self.transpose = fn(self.matrix), fn(self.transpose)
        return self

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseLinearMap.apply(x, self.matrix, self.transpose, self.range_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return self._project(x.to(self.matrix.dtype)) * self.scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_range(y)
        return (
            _SparseLinearMap.apply(y.to(self.matrix.dtype), self.transpose, self.matrix, self.domain_shape) * self.scale
        )

    def _ramp_filter(self, y: torch.Tensor, filter_type: str, frequency_scaling: float) -> torch.Tensor:
        """ODL's ``fbp_filter_op`` along the detector: its Fourier transform of the sinogram zero-padded to
        L = 2·detectors − 1 samples, on a frequency grid shifted by half a bin (ξ_k = (k − L/2)·Δξ, no zero
        frequency), times the filter, transformed back, real part. That is a convolution with the kernel
        h(m) = Σ_k H(ξ_k) cos(ξ_k m Δs) / L over detector offsets |m| < detectors, applied here by FFT."""
        detectors, padded = self.detectors, 2 * self.detectors - 1
        spacing = float(self.geometry.det_partition.cell_sides[0])
        xi = (np.arange(padded) - padded / 2) * 2 * np.pi / (padded * spacing)
        highest = np.abs(xi).max()
        window = _fbp_window(torch.from_numpy(np.abs(xi) / highest), filter_type, frequency_scaling).numpy()
        response = window * highest / (2 * self.angle_span)
        offsets = np.arange(-(detectors - 1), detectors)
        kernel = (response[None, :] * np.cos(np.outer(offsets, xi) * spacing)).sum(1) / padded
        length = 3 * detectors - 2  # linear (not circular) convolution of the detector row with the kernel
        circular = torch.zeros(length, dtype=torch.float64)
        circular[offsets % length] = torch.from_numpy(kernel)
        spectrum = torch.fft.rfft(circular).to(
            y.device, torch.complex128 if y.dtype == torch.float64 else torch.complex64
        )
        return torch.fft.irfft(torch.fft.rfft(y, n=length) * spectrum, n=length)[..., :detectors]

    def fbp(self, y: torch.Tensor, filter_type: str = "Hann", frequency_scaling: float = 1.0) -> torch.Tensor:
        """Filtered back-projection of a (normalised) sinogram batch, as ODL's ``fbp_op``."""
        self.check_range(y)
        filtered = self._ramp_filter(y.to(self.matrix.dtype), filter_type, frequency_scaling)
        # ODL's fbp_op on the unnormalised sinogram y / scale: its weighted adjoint is Aᵀ / adjoint_scale.
        return self.adjoint(filtered.contiguous()) / (self.scale**2 * self.adjoint_scale)


def ray_transform(
    size: int = 256,
    views: int = 18,
    view_selection: str = "equispaced",
    seed: int = 0,
    impl: str | None = None,
    extent: float = 1.0,
) -> ParallelBeamTransform:
    """The ray transform ``task.impl`` names (``default_impl``)."""
    impl = default_impl(impl)
    if impl == "torch":
        return TorchRayTransform(size, views, view_selection, seed, extent)
    return RayTransform(size, views, view_selection, seed, impl, extent)


GEOMETRIES = ("parallel", "fan")


def measured_geometry(
    angles: np.ndarray,
    detectors: int,
    detector_spacing: float,
    center_offset: float = 0.0,
    kind: str = "parallel",
    source_origin: float | None = None,
    origin_detector: float | None = None,
):
    """ODL's geometry of a measured scan: ``angles`` (radians, increasing) and a flat detector of ``detectors``
    bins of width ``detector_spacing``, on which the rotation axis projects ``center_offset`` bins right of the
    detector's middle (ODL's detector coordinate of bin i is (i − (detectors − 1)/2 − center_offset)·spacing).
    Parallel beam: the detector's coordinates are those at the rotation axis, and the offset must be 0 (ODL
    hands ASTRA's CPU projector a centred detector whatever the partition: shift the data instead). Fan beam
    (``kind="fan"``): the source turns at ``source_origin`` from the axis and the detector at ``origin_detector``
    beyond it (ODL's FanBeamGeometry, flat detector); spacing and offsets are measured on the detector."""
    import odl
    from odl.applications import tomo

    if kind not in GEOMETRIES:
        raise UserError(f"task.geometry must be one of {', '.join(GEOMETRIES)}, got '{kind}'.")
    first = -0.5 - (detectors - 1) / 2 - center_offset
    det_partition = odl.uniform_partition(first * detector_spacing, (first + detectors) * detector_spacing, detectors)
    angle_partition = odl.nonuniform_partition(np.asarray(angles, dtype=float))
    if kind == "parallel":
        if center_offset != 0:  # ODL's astra_cpu path builds ASTRA's 'parallel' geometry, which drops the offset
            raise ValueError("A parallel-beam geometry is centred: shift the sinogram (tasks.ct_measured.recentre).")
        return tomo.Parallel2dGeometry(angle_partition, det_partition)
    for option, value in (("task.source_origin", source_origin), ("task.origin_detector", origin_detector)):
        if value is None or not value > 0:
            raise UserError(f"{option} must be a positive distance for task.geometry=fan, got {value}.")
    return tomo.FanBeamGeometry(angle_partition, det_partition, float(source_origin), float(origin_detector))


def _measured_setup(operator, size: int, extent: float, geometry, odl_device: str) -> None:
    """The attributes of ``ParallelBeamTransform.__init__`` for a measured scan's ``geometry`` on the square
    [-extent, extent]² (physical units of the geometry) of size × size pixels."""
    import odl

    LinearOperator.__init__(operator)
    operator.odl_device = odl_device
    operator.space = odl.uniform_discr(
        [-extent, -extent], [extent, extent], (size, size), dtype="float32", impl="pytorch", device=odl_device
    )
    operator.geometry = geometry
    operator.views, operator.size, operator.extent = len(geometry.angles), size, extent
    operator.angle_indices = np.arange(operator.views)
    operator.detectors = int(geometry.det_partition.shape[0])
    operator.domain_shape, operator.range_shape = (1, size, size), (1, operator.views, operator.detectors)
    operator.scale = 1.0


class MeasuredRayTransform(RayTransform):
    """ODL's RayTransform with ASTRA on a measured scan's geometry (``measured_geometry``: parallel or fan
    beam, the scan's angles and detector), normalised to ||A||₂ = 1 like ``RayTransform``; ``fbp`` is ODL's
    (for fan beam: the flat-detector FBP, exact in the limit of small fan angles)."""

    def __init__(self, size: int, extent: float, geometry, impl: str | None = None):
        from odl.applications import tomo

        impl = default_impl(impl)
        if impl == "torch":
            raise UserError(
                "MeasuredRayTransform is the ASTRA operator: build task.impl=torch with measured_transform()."
            )
        if impl == "astra_cuda" and not torch.cuda.is_available():
            raise UserError("task.impl=astra_cuda needs a CUDA GPU: use task.impl=astra_cpu (or null for automatic).")
        odl_device = f"cuda:{torch.cuda.current_device()}" if impl == "astra_cuda" else "cpu"
        _measured_setup(self, size, extent, geometry, odl_device)
        self.odl_op = tomo.RayTransform(self.space, self.geometry, impl=impl)
        self.impl = impl
        self.adjoint_scale = float(self.space.weighting.const / self.odl_op.range.weighting.const)
        self.normalise()


class MeasuredTorchRayTransform(TorchRayTransform):
    """``TorchRayTransform`` (Joseph's projector as torch sparse matmuls) on a measured parallel-beam geometry."""

    def __init__(self, size: int, extent: float, geometry):
        _measured_setup(self, size, extent, geometry, "cpu")
        self.build_matrices(extent)


def measured_transform(size: int, extent: float, geometry, impl: str | None = None) -> ParallelBeamTransform:
    """The ray transform of a measured scan that ``task.impl`` names; the torch one is parallel-beam only."""
    impl = default_impl(impl)
    if impl == "torch":
        from odl.applications import tomo

        if not isinstance(geometry, tomo.Parallel2dGeometry):
            raise UserError(
                "task.impl=torch projects parallel beams only: use task.impl=astra_cpu for task.geometry=fan."
            )
        return MeasuredTorchRayTransform(size, extent, geometry)
    return MeasuredRayTransform(size, extent, geometry, impl)

"""Coil sensitivity maps of multi-coil MRI: synthetic birdcage maps and a smooth image phase for simulations,
and ESPIRiT estimation from the autocalibration (ACS) region (Uecker et al., MRM 2014).

ESPIRiT:

1. The calibration matrix holds every kernel-sized patch (all coils) of the fully sampled k-space centre.
2. Its dominant right singular vectors (singular value > ``threshold`` × the largest) span the signal
   subspace: valid multi-coil k-space is unchanged by projecting each patch onto it.
3. That projection, averaged over the k² patches that contain a k-space point, is a convolution; in
   image space it is a C×C matrix W(r) = (1/k²) Σ_j h_j(r) h_j(r)^H per pixel (h_j: the zero-padded
   inverse DFT of kernel j). W is built from the kernels' autocorrelation (a (2k-1)² stencil per coil
   pair), so only C² image-size FFTs are needed.
4. Sensitivities are the eigenvectors of W(r) with eigenvalue ≈ 1; pixels whose top eigenvalue is below
   ``crop`` (outside the object) get zero maps.

Defaults are sigpy's ``EspiritCalib`` (calib width 24, kernel 6, threshold 0.02, crop 0.95); BART's
``ecalib`` uses the same calibration size and kernel. The phase is made relative to a virtual body coil
(the dominant coil combination), so the SENSE image has no phase singularities.
"""

from __future__ import annotations

import logging
import math

import torch

from untrained.errors import UserError, check_in_range, check_integer

log = logging.getLogger(__name__)


# Synthetic coils --------------------------------------------------------------------------------------
def birdcage_maps(coils: int, shape: tuple[int, int], radius: float = 1.5) -> torch.Tensor:
    """Smooth synthetic sensitivities (C, H, W): coils on a circle of ``radius`` (FOV half-width units)
    around the image, magnitude 1/distance and the azimuthal phase of a loop coil (the model of
    sigpy.mri.birdcage_maps), normalised so that Σ_c |S_c|² = 1 everywhere."""
    height, width = shape
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, height, dtype=torch.float64),
        torch.linspace(-1, 1, width, dtype=torch.float64),
        indexing="ij",
    )
    maps = []
    for coil in range(coils):
        angle = 2 * math.pi * coil / coils
        dx, dy = x - radius * math.cos(angle), y - radius * math.sin(angle)
        maps.append(torch.polar(1 / torch.sqrt(dx**2 + dy**2), torch.atan2(dx, -dy) - angle))
    maps = torch.stack(maps)
    return (maps / torch.linalg.vector_norm(maps, dim=0)).to(torch.complex64)


def smooth_phase(shape: tuple[int, int], amplitude: float) -> torch.Tensor:
    """A smooth background phase (radians, |φ| ≤ amplitude): a tilt plus a quadratic bowl, as B0 offsets give."""
    height, width = shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    phase = 0.6 * x + 0.3 * y + 0.4 * (x**2 + y**2) - 0.4
    return amplitude * phase / phase.abs().max()


# ESPIRiT ----------------------------------------------------------------------------------------------
def acs_columns(column_mask: torch.Tensor) -> tuple[int, int]:
    """[start, stop) of the contiguous block of sampled columns around the k-space centre."""
    sampled = column_mask.bool().tolist()
    centre = len(sampled) // 2
    if not sampled[centre]:
        return centre, centre
    start, stop = centre, centre + 1
    while start > 0 and sampled[start - 1]:
        start -= 1
    while stop < len(sampled) and sampled[stop]:
        stop += 1
    return start, stop


def calibration_region(kspace: torch.Tensor, column_mask: torch.Tensor, calib_width: int = 24) -> torch.Tensor:
    """The fully sampled centre (C, h, w) of a column-undersampled k-space (C, H, W); h, w ≤ calib_width."""
    start, stop = acs_columns(column_mask)
    width = min(stop - start, calib_width)
    left = start + (stop - start - width) // 2
    height = min(kspace.shape[-2], calib_width)
    top = kspace.shape[-2] // 2 - height // 2
    return kspace[:, top : top + height, left : left + width]


def patches(calib: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Calibration matrix: one row per patch position, columns ordered (coil, ky, kx)."""
    windows = calib.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)  # (C, h', w', k, k)
    return windows.permute(1, 2, 0, 3, 4).reshape(-1, calib.shape[0] * kernel_size**2)


def signal_kernels(calib: torch.Tensor, kernel_size: int, threshold: float) -> torch.Tensor:
    """Rows of V^H spanning the calibration matrix's signal subspace, shaped (J, C, k, k)."""
    matrix = patches(calib.to(torch.complex128), kernel_size)
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    keep = singular > threshold * singular[0]
    return vh[keep].reshape(-1, calib.shape[0], kernel_size, kernel_size)


def image_space_operator(kernels: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """W(r) as (H, W, C, C) in centred image coordinates."""
    num_kernels, coils, k, _ = kernels.shape
    flat = kernels.reshape(num_kernels, coils * k * k)
    gram = (flat.T @ flat.conj()).reshape(coils, k, k, coils, k, k)  # Σ_j V[j,c,a] conj(V[j,d,b])
    stencil = torch.zeros(coils, coils, 2 * k - 1, 2 * k - 1, dtype=gram.dtype)
    for a1 in range(k):
        for a2 in range(k):
            # offsets a - b for all b of this a: the block gram[:, a1, a2, :, ::-1, ::-1] lands on a - b.
            block = gram[:, a1, a2].flip(-2, -1)  # (C, C, k, k) indexed by (k-1-b1, k-1-b2)
            stencil[:, :, a1 : a1 + k, a2 : a2 + k] += block
    height, width = image_shape
    if 2 * k - 1 > min(height, width):
        raise UserError(
            f"The image ({height}x{width}) is smaller than the ESPIRiT kernel support: lower task.espirit.kernel_size."
        )
    padded = torch.zeros(coils, coils, height, width, dtype=torch.complex64)
    padded[:, :, : 2 * k - 1, : 2 * k - 1] = stencil.to(torch.complex64)
    padded = torch.roll(padded, shifts=(-(k - 1), -(k - 1)), dims=(-2, -1))  # offset Δ at index Δ mod N
    operator = torch.fft.ifft2(padded, norm="forward") / k**2  # Σ_Δ K(Δ) e^{+2πi r·Δ/N} / k²
    operator = torch.fft.fftshift(operator, dim=(-2, -1))
    return operator.permute(2, 3, 0, 1)


def espirit_maps(
    calib: torch.Tensor,
    image_shape: tuple[int, int],
    kernel_size: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coil maps (C, H, W) complex64 and the top eigenvalue (H, W) from a calibration region (C, h, w)."""
    coils, height, width = calib.shape
    if min(height, width) < kernel_size:
        raise UserError(
            f"The fully sampled k-space centre is {height}x{width}, smaller than the ESPIRiT kernel ({kernel_size}): "
            f"raise task.center_fraction, lower task.espirit.kernel_size, or give the maps (task.maps)."
        )
    kernels = signal_kernels(calib, kernel_size, threshold)
    operator = image_space_operator(kernels, image_shape)
    # W is Hermitian; symmetrise against round-off before the batched eigendecomposition.
    operator = 0.5 * (operator + operator.conj().transpose(-2, -1))
    eigenvalues, eigenvectors = torch.linalg.eigh(operator)
    top_value, maps = eigenvalues[..., -1], eigenvectors[..., -1]  # (H, W), (H, W, C)
    maps = maps.permute(2, 0, 1).contiguous()
    maps = maps * (top_value > crop)
    return align_phase(maps), top_value


def align_phase(maps: torch.Tensor) -> torch.Tensor:
    """Remove each pixel's arbitrary eigenvector phase: make the virtual body coil v^H S(r) real ≥ 0."""
    flat = maps.reshape(maps.shape[0], -1)
    _, vectors = torch.linalg.eigh(flat @ flat.conj().T)
    virtual = torch.einsum("c,chw->hw", vectors[:, -1].conj(), maps)
    phase = torch.where(virtual.abs() > 0, virtual.conj() / virtual.abs().clamp_min(1e-12), torch.ones_like(virtual))
    return maps * phase


def espirit_options(options: dict) -> dict:
    """task.espirit with its defaults, checked."""
    defaults = {"calib_width": 24, "kernel_size": 6, "threshold": 0.02, "crop": 0.95}
    unknown = set(options) - set(defaults)
    if unknown:
        raise UserError(f"Unknown task.espirit option(s) {sorted(unknown)}: choose from {sorted(defaults)}.")
    options = {**defaults, **options}
    check_integer("task.espirit.calib_width", options["calib_width"], 3)
    check_integer("task.espirit.kernel_size", options["kernel_size"], 2)  # shrinks to fit a narrow centre
    check_in_range("task.espirit.threshold", options["threshold"], 0, 1, high_open=True)
    check_in_range("task.espirit.crop", options["crop"], 0, 1, high_open=True)
    return options


def estimate_maps(kspace: torch.Tensor, columns: torch.Tensor, options: dict) -> torch.Tensor:
    """ESPIRiT maps (C, H, W) from the centre of ``kspace`` where ``columns`` are fully sampled; the kernel
    shrinks to fit a narrow centre (small images)."""
    options = espirit_options(options)
    start, stop = acs_columns(columns)
    acs = min(stop - start, options["calib_width"])
    if acs < 3:
        raise UserError(
            f"Only {acs} fully sampled centre columns; ESPIRiT needs at least 3: raise task.center_fraction "
            f"or give the maps (task.maps=given)."
        )
    kernel = min(options["kernel_size"], max(2, math.ceil(acs / 2)))
    if kernel < options["kernel_size"]:
        log.info(
            "ESPIRiT: %d fully sampled centre columns; kernel %d instead of %d.", acs, kernel, options["kernel_size"]
        )
    calib = calibration_region(kspace, columns, options["calib_width"])
    coil_maps, _ = espirit_maps(calib, tuple(kspace.shape[-2:]), kernel, options["threshold"], options["crop"])
    return coil_maps

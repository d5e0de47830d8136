"""Convolution with a known kernel (per colour channel), with circular, reflect or valid boundaries.

circular: FFT convolution, adjoint = correlation (conjugate transfer function).
reflect:  reflect-pad then valid convolution, same-size output; adjoint by autograd (exact: the
          operator is linear, so A^T y = ∇_x <A x, y>, which folds the padded border back).
valid:    only the fully overlapping part (smaller output); adjoint = transposed convolution.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from untrained.errors import (
    UserError,
    check_array,
    check_in_range,
    check_integer,
    check_number,
    check_positive,
    read_npy,
)
from untrained.operators.base import LinearOperator, Operator

BOUNDARIES = ("circular", "reflect", "valid")
KERNELS = ("gaussian", "box", "motion", "file")
MAX_KERNEL_SIZE = 1024  # pixels per side, whatever the image: the bound of an option the chosen kind ignores
MAX_GAIN = 100.0  # at gain 100 a blurred value of 5% of the range already gives 99% of the response


def gaussian_kernel(size: int = 9, sigma: float = 2.0) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).float()


def box_kernel(size: int = 5) -> torch.Tensor:
    return torch.full((size, size), 1.0 / size**2)


def motion_kernel(length: int = 9, angle: float = 45.0) -> torch.Tensor:
    """A linear motion blur of ``length`` pixels at ``angle`` degrees (anti-aliased line through the centre)."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size))
    centre = (size - 1) / 2
    theta = math.radians(angle)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length):
        x, y = centre + t * math.cos(theta), centre - t * math.sin(theta)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # bilinear splat
            weight = (1 - abs(x - x0 - dx)) * (1 - abs(y - y0 - dy))
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size and weight > 0:
                kernel[y0 + dy, x0 + dx] += weight
    return torch.from_numpy(kernel / kernel.sum()).float()


def kernel_from_file(path: str, option: str = "task.kernel") -> torch.Tensor:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"Kernel file '{path}' does not exist: give a .npy or .png kernel ({option}.path).")
    if file.suffix == ".npy":
        kernel = read_npy(file, "kernel file")
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            kernel = np.asarray(Image.open(file).convert("L"))
        except (UnidentifiedImageError, OSError) as error:
            raise UserError(f"Cannot read kernel image '{path}' ({error}): give a .npy or .png kernel.") from None
    kernel = check_array(f"Kernel file '{path}'", kernel, (2,)).astype(np.float32)
    if kernel.min() < 0 or not kernel.sum() > 0:
        raise UserError(
            f"Kernel file '{path}' must hold non-negative values with a positive sum (min {kernel.min()}, "
            f"sum {kernel.sum()})."
        )
    return torch.from_numpy(kernel / kernel.sum())


def make_kernel(
    kind: str = "gaussian",
    size: int = 9,
    sigma: float = 2.0,
    length: int = 9,
    angle: float = 45.0,
    path: str | None = None,
    option: str = "task.kernel",
    max_size: int = MAX_KERNEL_SIZE,
) -> torch.Tensor:
    """A normalised blur kernel: gaussian (size, sigma), box (size), motion (length, angle), file (path).

    ``option`` names the config node in messages; ``max_size`` (the image's smaller side) bounds the kind's extent
    before the kernel is allocated."""
    if kind not in KERNELS:
        raise UserError(f"Unknown kernel type {option}.kind={kind}: choose one of {', '.join(KERNELS)}.")
    check_integer(f"{option}.size", size, 1, max_size if kind in ("gaussian", "box") else MAX_KERNEL_SIZE)
    check_positive(f"{option}.sigma", sigma)
    check_integer(f"{option}.length", length, 1, max_size if kind == "motion" else MAX_KERNEL_SIZE)
    check_number(f"{option}.angle", angle)
    makers = {
        "gaussian": lambda: gaussian_kernel(size, sigma),
        "box": lambda: box_kernel(size),
        "motion": lambda: motion_kernel(length, angle),
        "file": lambda: kernel_from_file(path or "", option),
    }
    return makers[kind]()


def _check_kernel(kernel: torch.Tensor, spatial: tuple[int, int]) -> None:
    if kernel.ndim != 2:
        raise UserError(f"A blur kernel must be 2D, got shape {tuple(kernel.shape)}.")
    if kernel.shape[0] > spatial[0] or kernel.shape[1] > spatial[1]:
        raise UserError(
            f"The kernel ({kernel.shape[0]}x{kernel.shape[1]}) is larger than the image "
            f"({spatial[0]}x{spatial[1]}): use a smaller kernel or a larger task.size."
        )


def centred_kernel(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The kernel zero-padded to the image size with its centre at pixel (0, 0), for FFT convolution."""
    kh, kw = kernel.shape
    padded = F.pad(kernel, (0, width - kw, 0, height - kh))
    return torch.roll(padded, (-(kh // 2), -(kw // 2)), dims=(0, 1))


def circular_convolution(x: torch.Tensor, kernel: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
    h, w = x.shape[-2:]
    transfer = torch.fft.rfft2(centred_kernel(kernel, h, w))
    return torch.fft.irfft2(torch.fft.rfft2(x) * (transfer.conj() if adjoint else transfer), s=(h, w))


def blur(x: torch.Tensor, kernel: torch.Tensor, boundary: str) -> torch.Tensor:
    """Convolve every channel of ``x`` (B, C, H, W) with ``kernel`` (kh, kw); differentiable in both."""
    if boundary == "circular":
        return circular_convolution(x, kernel)
    channels = x.shape[1]
    kh, kw = kernel.shape
    weight = kernel.flip(0, 1).expand(channels, 1, kh, kw)  # conv2d correlates: flip for a convolution
    if boundary == "reflect":
        x = F.pad(x, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode="reflect")
    return F.conv2d(x, weight, groups=channels)


class Blur(LinearOperator):
    """y = k * x per channel; ``kernel`` is a buffer (kh, kw) so a method can learn a correction of it."""

    def __init__(self, kernel: torch.Tensor, image_shape: tuple[int, int, int], boundary: str = "circular"):
        super().__init__()
        if boundary not in BOUNDARIES:
            raise UserError(f"Unknown task.boundary '{boundary}': choose one of {', '.join(BOUNDARIES)}.")
        _check_kernel(kernel, image_shape[1:])
        self.boundary = boundary
        # float64 kernels stay float64 (exact hypergradient checks); anything else becomes float32
        self.register_buffer("kernel", kernel if kernel.dtype == torch.float64 else kernel.float())
        self.domain_dtype = self.range_dtype = self.kernel.dtype
        self.domain_shape = tuple(image_shape)
        c, h, w = image_shape
        kh, kw = kernel.shape
        self.range_shape = (c, h - kh + 1, w - kw + 1) if boundary == "valid" else self.domain_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return blur(x, self.kernel, self.boundary)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.boundary == "circular":
            return circular_convolution(y, self.kernel, adjoint=True)
        if self.boundary == "valid":
            kh, kw = self.kernel.shape
            weight = self.kernel.flip(0, 1).expand(y.shape[1], 1, kh, kw)
            return F.conv_transpose2d(y, weight, groups=y.shape[1])
        x = torch.zeros(y.shape[0], *self.domain_shape, device=y.device, dtype=y.dtype, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.forward(x), x, y, create_graph=y.requires_grad)
        return grad

    def transfer_function(self) -> torch.Tensor:
        """The kernel's DFT at the image size (circular model), for Wiener deconvolution."""
        return torch.fft.fft2(centred_kernel(self.kernel, *self.domain_shape[1:]))


class SaturatedBlur(Operator):
    """Non-linear blur: a camera response r(t) = (1 − e^{−g t}) / (1 − e^{−g}) applied after the blur.

    The aSeqDIP paper used a learned non-linear blur model whose weights cannot be downloaded here;
    this differentiable saturation model is the substitute.
    """

    def __init__(self, blur_operator: Blur, gain: float = 3.0):
        super().__init__()
        check_in_range("task.gain", gain, 0, MAX_GAIN, low_open=True)
        self.blur, self.gain = blur_operator, gain
        self.domain_shape, self.range_shape = blur_operator.domain_shape, blur_operator.range_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self.gain * self.blur(x)) / -math.expm1(-self.gain)

"""Anti-aliased downsampling by an integer factor: replicate-pad (as the reference's preserve_size),
convolve with a Lanczos-2 or bicubic kernel, keep every factor-th pixel (the DIP paper's super-resolution
operator, Ulyanov et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from untrained.errors import UserError, check_integer
from untrained.operators.base import LinearOperator

KERNELS = ("lanczos2", "bicubic")


def _lanczos2(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.abs() < 2, torch.sinc(t) * torch.sinc(t / 2), torch.zeros_like(t))


def _bicubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    t = t.abs()
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def downsampling_kernel(factor: int, kind: str = "lanczos2") -> torch.Tensor:
    """Separable 4·factor-tap kernel centred between pixels (phase 0.5), support 2 in low-res pixels."""
    if kind not in KERNELS:
        raise UserError(f"Unknown task.kernel '{kind}' for super-resolution: choose one of {', '.join(KERNELS)}.")
    size = 4 * factor
    t = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / factor
    taps = _lanczos2(t) if kind == "lanczos2" else _bicubic(t)
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).float()


class Downsample(LinearOperator):
    """(B, C, H, W) → (B, C, H/f, W/f); adjoint by autograd of the linear map (exact)."""

    def __init__(self, factor: int, image_shape: tuple[int, int, int], kind: str = "lanczos2"):
        super().__init__()
        c, h, w = image_shape
        check_integer("task.factor", factor, 1, min(h, w))
        if h % factor or w % factor:
            raise UserError(
                f"The scale factor {factor} does not divide the image size {h}x{w}: "
                f"choose task.size as a multiple of {factor}."
            )
        self.factor = factor
        self.register_buffer("kernel", downsampling_kernel(factor, kind))
        self.domain_shape, self.range_shape = (c, h, w), (c, h // factor, w // factor)
        self.padding = (self.kernel.shape[0] - factor) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        channels, k = x.shape[1], self.kernel.shape[0]
        padded = F.pad(x, (self.padding,) * 4, mode="replicate")
        return F.conv2d(padded, self.kernel.expand(channels, 1, k, k), stride=self.factor, groups=channels)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(y.shape[0], *self.domain_shape, device=y.device, dtype=y.dtype, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.forward(x), x, y, create_graph=y.requires_grad)
        return grad

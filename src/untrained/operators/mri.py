"""Multi-coil Cartesian MRI (SENSE): y_c = M ⊙ F(S_c x) (CG-SENSE uses ``operators.base.conjugate_gradient``).

F is the centered orthonormal 2D DFT of fastMRI (``fastmri.fft2c``: ifftshift → fft2(norm='ortho') →
fftshift), written with native complex ``torch.fft`` (no real-view copies; the shifts become a
checkerboard sign for even sizes); the tests check it equals ``fastmri.fft2c`` / ``fastmri.ifft2c``. Images are
complex ``(B, H, W)``, k-space ``(B, coils, H, W)``.
"""

from __future__ import annotations

import torch

from untrained.errors import UserError
from untrained.operators.base import LinearOperator

SPATIAL = (-2, -1)


def checkerboard(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(-1)^(i+j): for even sizes, fftshift(F(ifftshift(x))) = (-1)^(H/2+W/2) D F(D x), with D this pattern.

    Two real multiplications replace the two shift copies, which is faster (see docs/performance.md, "Operators").
    """
    parity = (torch.arange(height, device=device)[:, None] + torch.arange(width, device=device)[None]) % 2
    return 1.0 - 2.0 * parity.float()


def centered(transform, data: torch.Tensor) -> torch.Tensor:
    """``transform`` (torch.fft.fft2 or ifft2, orthonormal) with the k-space/image centre at (H//2, W//2)."""
    height, width = data.shape[-2:]
    if height % 2 or width % 2:
        shifted = torch.fft.ifftshift(data, dim=SPATIAL)
        return torch.fft.fftshift(transform(shifted, dim=SPATIAL, norm="ortho"), dim=SPATIAL)
    pattern = checkerboard(height, width, data.device)
    sign = -1.0 if (height // 2 + width // 2) % 2 else 1.0
    return transform(data * pattern, dim=SPATIAL, norm="ortho") * (pattern * sign)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D DFT over the last two axes (fastMRI's ``fft2c`` on complex tensors)."""
    return centered(torch.fft.fft2, image)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`fft2c`."""
    return centered(torch.fft.ifft2, kspace)


def rss(coil_images: torch.Tensor, coil_dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares coil combination (fastMRI's ``rss_complex`` for complex tensors)."""
    return torch.linalg.vector_norm(coil_images, dim=coil_dim)


class MultiCoilMRI(LinearOperator):
    """SENSE forward model for one slice: coil sensitivities ``maps`` (C, H, W) and a k-space ``mask`` (H, W).

    forward: x (B, H, W) → M ⊙ F(S_c x) (B, C, H, W); adjoint: y → Σ_c conj(S_c) F^H(M ⊙ y).
    The mask is real (0/1 or sampling weights); columns not sampled are zero in the range.
    """

    domain_dtype = torch.complex64
    range_dtype = torch.complex64

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        if maps.ndim != 3:
            raise UserError(f"Coil sensitivity maps must have shape (coils, H, W), got {tuple(maps.shape)}.")
        if tuple(mask.shape) != tuple(maps.shape[1:]):
            raise UserError(
                f"The sampling mask has shape {tuple(mask.shape)} but the k-space is {tuple(maps.shape[1:])}: "
                f"build the mask for the k-space size (H, W)."
            )
        self.register_buffer("maps", maps.to(torch.complex64))
        self.register_buffer("mask", mask.to(torch.float32))
        # Pixels where some coil sees the object: outside it the model says nothing (A^H A = 0 there).
        self.register_buffer("support", (maps.abs().sum(0) > 0).to(torch.float32))
        self.domain_shape = tuple(maps.shape[1:])
        self.range_shape = tuple(maps.shape)

    @property
    def num_coils(self) -> int:
        return self.maps.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return fft2c(self.maps * x[:, None]) * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.range_shape:
            raise ValueError(
                f"{type(self).__name__}.adjoint expects k-space of shape (B, {', '.join(map(str, self.range_shape))}), "
                f"got {tuple(y.shape)}."
            )
        return torch.sum(self.maps.conj() * ifft2c(y * self.mask), dim=1)

"""Linear baselines: Wiener deconvolution, Tikhonov and truncated SVD of a matrix, and CG-SENSE."""

from __future__ import annotations

import torch

from untrained.operators.base import conjugate_gradient
from untrained.operators.blur import Blur


def wiener_deconvolution(y: torch.Tensor, operator: Blur, alpha: float) -> torch.Tensor:
    """Tikhonov-regularised inverse filter conj(K) Y / (|K|² + α) under the circular model."""
    transfer = operator.transfer_function()
    if tuple(y.shape[1:]) != operator.domain_shape:  # valid boundary: embed the smaller data
        dh, dw = (operator.domain_shape[1] - y.shape[-2]) // 2, (operator.domain_shape[2] - y.shape[-1]) // 2
        y = torch.nn.functional.pad(
            y,
            (dw, operator.domain_shape[2] - y.shape[-1] - dw, dh, operator.domain_shape[1] - y.shape[-2] - dh),
            mode="replicate",
        )
    spectrum = torch.fft.fft2(y) * transfer.conj() / (transfer.abs() ** 2 + alpha)
    return torch.fft.ifft2(spectrum).real


def tikhonov(matrix: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """x(A) = (AᵀA + αI)⁻¹ Aᵀy for a batch y of shape (B, m)."""
    n = matrix.shape[1]
    normal = matrix.T @ matrix + alpha * torch.eye(n, dtype=matrix.dtype)
    return torch.linalg.solve(normal, (y @ matrix).T).T


def truncated_svd(matrix: torch.Tensor, y: torch.Tensor, threshold: float) -> torch.Tensor:
    """Σ_{σ_i ≥ threshold} σ_i⁻¹ ⟨y, v_i⟩ u_i for a batch y of shape (B, m)."""
    v, sigma, ut = torch.linalg.svd(matrix)
    keep = sigma >= threshold
    return ((y @ v[:, keep]) / sigma[keep]) @ ut[keep]


def cg_sense(operator, zero_filled: torch.Tensor, iterations: int) -> torch.Tensor:
    """CG-SENSE: ``iterations`` conjugate-gradient steps on the normal equations AᴴA x = Aᴴy from x = Aᴴy."""
    estimate, _ = conjugate_gradient(operator.normal, zero_filled, iterations)
    return estimate

"""Sparsity-regularised least squares: the L1-wavelet reconstruction of compressed-sensing MRI.

min_x ½‖A x − y‖² + λ‖Ψ x‖₁ with Ψ an orthogonal wavelet transform (``operators.wavelet``), the problem
BART's ``pics -l1`` and sigpy's ``L1WaveletRecon`` solve, by FISTA (Beck & Teboulle 2009): a gradient step on
the data term with step 1/‖A‖², then the exact proximal map of the penalty, Ψᴴ soft(Ψ v, λ/‖A‖²), exact since
Ψ is orthogonal. Complex images are thresholded by magnitude (the phase is kept).
"""

from __future__ import annotations

import torch

from untrained.baselines import MAX_BASELINE_STEPS
from untrained.errors import check_at_least, check_integer
from untrained.operators.base import LinearOperator, euclidean_norm, operator_norm
from untrained.operators.wavelet import Wavelet2D

POWER_ITERATIONS = 100
STEP_MARGIN = 1.01  # the power iteration approaches ‖A‖ from below: a slightly shorter step keeps FISTA monotone


def soft_threshold(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """z · max(|z| − t, 0) / |z|: the proximal map of t‖·‖₁, for real and complex entries."""
    magnitude = z.abs()
    return z * (torch.clamp(magnitude - threshold, min=0) / magnitude.clamp(min=torch.finfo(magnitude.dtype).tiny))


@torch.no_grad()
def fista_l1(
    operator: LinearOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    weight: float,
    transform: LinearOperator,
    max_iterations: int,
    tolerance: float,
    lipschitz: float | None = None,
) -> tuple[torch.Tensor, int]:
    """FISTA on ½‖A x − y‖² + ``weight``·‖Ψ x‖₁ (Ψ = ``transform``, orthogonal) from ``x0``.

    Stops once ‖x_k − x_{k−1}‖ ≤ ``tolerance``·‖x_k‖ or after ``max_iterations``; returns x and the iterations done.
    ``lipschitz`` = ‖A‖² (power iteration when None).
    """
    check_at_least("task.l1_weight", weight, 0)
    check_integer("task.l1_iterations", max_iterations, 1, MAX_BASELINE_STEPS)
    check_at_least("task.l1_tolerance", tolerance, 0)
    if lipschitz is None:
        lipschitz = operator_norm(operator, POWER_ITERATIONS) ** 2 * STEP_MARGIN
    step = 1.0 / lipschitz
    x, z, momentum = x0.clone(), x0.clone(), 1.0
    for iteration in range(1, max_iterations + 1):
        gradient = operator.adjoint(operator(z) - y)
        previous = x
        x = transform.adjoint(soft_threshold(transform(z - step * gradient), weight * step))
        next_momentum = (1 + (1 + 4 * momentum**2) ** 0.5) / 2
        z = x + ((momentum - 1) / next_momentum) * (x - previous)
        momentum = next_momentum
        if euclidean_norm(x - previous) <= tolerance * euclidean_norm(x):
            return x, iteration
    return x, max_iterations


def l1_wavelet_sense(
    operator: LinearOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    weight: float,
    max_iterations: int = 200,
    tolerance: float = 1e-4,
    wavelet: str = "db4",
    levels: int = 4,
) -> tuple[torch.Tensor, int]:
    """L1-wavelet SENSE: ``fista_l1`` with a periodic ``wavelet`` DWT of ``levels`` levels on the operator's
    (complex) images (B, H, W); returns the image and the iterations done."""
    transform = Wavelet2D(tuple(operator.domain_shape), wavelet, levels, operator.domain_dtype).to(y.device)
    return fista_l1(operator, y, x0, weight, transform, max_iterations, tolerance)

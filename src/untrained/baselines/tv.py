"""Total-variation baselines: the exact isotropic TV problem solved by Chambolle–Pock's primal-dual method.

    min_x ½‖A x − y‖² + λ ‖∇x‖_{2,1}  (+ x in a box)

on any linear torch operator (real or complex images). ∇ is the forward difference with a Neumann boundary
(:func:`untrained.regularizers.finite_differences`, the penalty the methods use); ‖·‖_{2,1} takes the Euclidean
norm over the two directions and every channel at each pixel (vectorial TV for colour images; the real and
imaginary parts of a complex image) and sums over pixels. The data term is the plain sum over the measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from untrained.baselines import MAX_BASELINE_STEPS
from untrained.errors import check_at_least, check_integer
from untrained.operators.base import LinearOperator, inner, operator_norm

GRADIENT_NORM_SQUARED = 8.0  # ‖∇‖² ≤ 8 for 2D forward differences
CHECK_EVERY = 10  # iterations between stopping tests (the gap costs one more application of A)


@dataclass
class TVResult:
    image: torch.Tensor
    iterations: int
    converged: bool
    criterion: float  # the last relative gap (box-constrained) or relative change (unconstrained)


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences over the last two axes, stacked in a new axis 1: (B, 2, *rest)."""
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack((dy, dx), dim=1)


def divergence(q: torch.Tensor) -> torch.Tensor:
    """−∇ᵀq for q = (B, 2, *rest): the negative adjoint of :func:`gradient`."""
    qy, qx = q[:, 0], q[:, 1]
    div = torch.zeros_like(qy)
    div[..., :-1, :] += qy[..., :-1, :]
    div[..., 1:, :] -= qy[..., :-1, :]
    div[..., :, :-1] += qx[..., :, :-1]
    div[..., :, 1:] -= qx[..., :, :-1]
    return div


def pixel_norms(q: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm at each pixel over directions and channels: (B, 1, ..., H, W) broadcastable to q."""
    squared = q.abs().square() if q.is_complex() else q.square()
    dims = tuple(range(1, q.ndim - 2))
    return squared.sum(dim=dims, keepdim=True).sqrt()


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """‖∇x‖_{2,1}, summed over the batch."""
    return pixel_norms(gradient(x)).sum()


def clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(*bounds)


def tv_pdhg(
    operator: LinearOperator,
    y: torch.Tensor,
    weight: float,
    x0: torch.Tensor | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    max_iterations: int = 2000,
    tolerance: float = 1e-4,
    operator_norm_value: float | None = None,
) -> TVResult:
    """Chambolle–Pock (PDHG, θ = 1) on min_x ½‖A x − y‖² + weight·‖∇x‖_{2,1} + ι_bounds(x), from ``x0``.

    K = [A; ∇] with dual variables p (data) and q (TV); τσ‖K‖² = 0.98 with ‖K‖² ≤ ‖A‖² + 8 (‖A‖ by power
    iteration unless given). The ratio τ/σ adapts every 10 iterations by residual balancing (Goldstein, Li &
    Yuan 2015, with shrinking adaptivity, which keeps convergence): the best ratio depends on the operator and
    the weight.
    Stops when the relative primal-dual gap (P − D)/P ≤ ``tolerance`` (with bounds, where the dual of the box
    is finite) or, without bounds, when ‖x_{k+1} − x_k‖ ≤ ``tolerance``·‖x_{k+1}‖, tested every 10
    iterations; else after ``max_iterations``. ``bounds`` must be None for complex images.
    """
    check_at_least("task.tv_weight", weight, 0)
    check_integer("task.tv_max_iterations", max_iterations, 0, MAX_BASELINE_STEPS)
    check_at_least("task.tv_tolerance", tolerance, 0)
    with torch.no_grad():
        x = operator.adjoint(y) if x0 is None else x0.detach().clone()
        x = clip(x, bounds)
        norm = operator_norm(operator) if operator_norm_value is None else operator_norm_value
        tau = sigma = 0.99 / math.sqrt(norm**2 + GRADIENT_NORM_SQUARED)
        adaptivity = 0.5
        p, q = torch.zeros_like(y), torch.zeros_like(gradient(x))
        ax, grad_x = operator(x), gradient(x)
        at_p = torch.zeros_like(x)  # Aᵀp
        criterion = math.inf
        for iteration in range(1, max_iterations + 1):
            x_new = clip(x - tau * (at_p - divergence(q)), bounds)
            ax_new, grad_new = operator(x_new), gradient(x_new)
            p_new = (p + sigma * (2 * ax_new - ax - y)) / (1 + sigma)
            q_new = q + sigma * (2 * grad_new - grad_x)
            q_new = q_new / torch.clamp(pixel_norms(q_new) / weight, min=1.0) if weight > 0 else torch.zeros_like(q)
            at_p_new = operator.adjoint(p_new)
            if iteration % CHECK_EVERY == 0 or iteration == max_iterations:
                # Residual balancing: primal residual (x − x⁺)/τ − Kᵀ(y − y⁺), dual residual (y − y⁺)/σ − K(x − x⁺).
                primal_residual = norm_of((x - x_new) / tau - (at_p - at_p_new) + divergence(q - q_new))
                dual_residual = math.hypot(
                    norm_of((p - p_new) / sigma - (ax - ax_new)), norm_of((q - q_new) / sigma - (grad_x - grad_new))
                )
                if primal_residual > 1.5 * dual_residual:
                    tau, sigma, adaptivity = tau / (1 - adaptivity), sigma * (1 - adaptivity), adaptivity * 0.95
                elif dual_residual > 1.5 * primal_residual:
                    tau, sigma, adaptivity = tau * (1 - adaptivity), sigma / (1 - adaptivity), adaptivity * 0.95
                if bounds is not None:
                    criterion = relative_gap(ax_new, grad_new, y, weight, at_p_new, p_new, q_new, bounds)
                else:
                    criterion = norm_of(x_new - x) / max(norm_of(x_new), 1e-30)
            x, ax, grad_x, p, q, at_p = x_new, ax_new, grad_new, p_new, q_new, at_p_new
            if criterion <= tolerance:
                return TVResult(x, iteration, True, criterion)
    return TVResult(x, max_iterations, False, criterion)


def norm_of(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def relative_gap(ax, grad_x, y, weight, at_p, p, q, bounds: tuple[float, float]) -> float:
    """(P(x) − D(p, q)) / |P(x)|: P = ½‖Ax − y‖² + λ‖∇x‖_{2,1}, D = −½‖p‖² − ⟨p, y⟩ − Σ max over the box of
    ⟨z, x⟩ with z = −Aᵀp + div q (‖q‖_{2,∞} ≤ λ holds by the projection)."""
    # In double precision: the two values nearly cancel near the solution.
    residual = (ax - y).double()
    primal = 0.5 * inner(residual, residual) + weight * pixel_norms(grad_x.double()).sum()
    z = (-at_p + divergence(q)).double()
    low, high = bounds
    support = torch.sum(torch.clamp(z, min=0) * high + torch.clamp(z, max=0) * low)
    dual = -0.5 * inner(p.double(), p.double()) - inner(p.double(), y.double()) - support
    return float((primal - dual) / primal.abs().clamp_min(1e-30))

"""Iterative least-squares baselines with early stopping (the regularisation is the iteration count):
SIRT and CGLS on any linear torch operator (dival's iterative CT baselines)."""

from __future__ import annotations

import torch

from untrained.baselines import MAX_BASELINE_STEPS
from untrained.errors import check_integer
from untrained.operators.base import LinearOperator, inner


def sirt(
    operator: LinearOperator,
    y: torch.Tensor,
    iterations: int,
    x0: torch.Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    option: str = "task.sirt_iterations",
) -> torch.Tensor:
    """SIRT: x ← x + C Aᵀ R (y − A x), with R = 1 / A𝟙 (row sums) and C = 1 / Aᵀ𝟙 (column sums), from ``x0``
    (zero by default), projected onto ``bounds`` if given. For a non-negative A it converges to a least-squares
    solution in the R-weighted norm (the exact solution of a consistent system)."""
    check_integer(option, iterations, 0, MAX_BASELINE_STEPS)
    with torch.no_grad():
        x = torch.zeros((1, *operator.domain_shape), dtype=y.dtype) if x0 is None else x0.detach().clone()
        row_sums = operator(torch.ones_like(x))
        column_sums = operator.adjoint(torch.ones_like(y))
        # Rays that miss the image and pixels no ray sees get no weight.
        row_weights = torch.where(row_sums > 1e-12 * row_sums.max(), 1 / row_sums, torch.zeros_like(row_sums))
        column_weights = torch.where(
            column_sums > 1e-12 * column_sums.max(), 1 / column_sums, torch.zeros_like(column_sums)
        )
        for _ in range(iterations):
            x = x + column_weights * operator.adjoint(row_weights * (y - operator(x)))
            if bounds is not None:
                x = x.clamp(*bounds)
    return x


def cgls(
    operator: LinearOperator, y: torch.Tensor, iterations: int, option: str = "task.cgls_iterations"
) -> tuple[torch.Tensor, int]:
    """CGLS (CG on AᵀA x = Aᵀy in the stable least-squares form) from x = 0; returns the estimate and the
    iterations done (fewer than asked once the normal residual vanishes)."""
    check_integer(option, iterations, 0, MAX_BASELINE_STEPS)
    with torch.no_grad():
        residual = y.clone()
        normal_residual = operator.adjoint(residual)
        x = torch.zeros_like(normal_residual)
        direction = normal_residual.clone()
        gamma = inner(normal_residual, normal_residual)
        for iteration in range(iterations):
            if gamma <= 0:
                return x, iteration
            image = operator(direction)
            step = gamma / inner(image, image)
            x = x + step * direction
            residual = residual - step * image
            normal_residual = operator.adjoint(residual)
            new_gamma = inner(normal_residual, normal_residual)
            direction = normal_residual + (new_gamma / gamma) * direction
            gamma = new_gamma
    return x, iterations

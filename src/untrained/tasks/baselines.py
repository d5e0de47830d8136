"""Classical reconstructions every task reports next to the network's."""

from __future__ import annotations

import torch

from untrained.errors import check_at_least, check_integer

MAX_BASELINE_STEPS = 100_000  # iterations of a classical baseline (TV, CG; the defaults are 10 to 150)


def tv_reconstruction(
    operator,
    y: torch.Tensor,
    x0: torch.Tensor,
    weight: float,
    steps: int,
    lr: float = 0.02,
    bounds: tuple[float, float] | None = (0.0, None),
) -> torch.Tensor:
    """min_x ½||A x − y||² + weight·TV(x) (isotropic) by Adam from x0, projected onto ``bounds``."""
    from untrained.regularizers import total_variation

    check_at_least("task.tv_weight", weight, 0)
    check_integer("task.tv_steps", steps, 0, MAX_BASELINE_STEPS)
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        residual = operator(x) - y
        loss = 0.5 * residual.abs().pow(2).sum() + weight * total_variation(x, "isotropic")
        loss.backward()
        optimizer.step()
        if bounds is not None:
            with torch.no_grad():
                x.clamp_(*bounds)
    return x.detach()

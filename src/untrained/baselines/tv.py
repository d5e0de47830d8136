"""Total-variation baselines: TV-regularised least squares for any operator, and Chambolle's TV denoiser."""

from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle

from untrained.baselines import MAX_BASELINE_STEPS
from untrained.errors import check_at_least, check_integer
from untrained.regularizers import total_variation


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


def tv_denoise(noisy: torch.Tensor, weight: float) -> torch.Tensor:
    """Chambolle's TV denoiser (scikit-image) of a (1, C, H, W) image, all channels together."""
    image = noisy[0].permute(1, 2, 0).numpy()
    out = denoise_tv_chambolle(image, weight=weight, channel_axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(2, 0, 1)[None]

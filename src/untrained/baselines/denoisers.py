"""BM3D (Dabov et al. 2007) and its colour version CBM3D, the classical denoisers the DIP papers compare with, from
the ``bm3d`` package (the authors' reference implementation; ``pip install -e ".[bm3d]"``)."""

from __future__ import annotations

import numpy as np
import torch

from untrained.errors import UserError


def bm3d_denoise(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D of a grey (1, 1, H, W) or CBM3D of a colour (1, 3, H, W) image in [0, 1], for white Gaussian noise of
    standard deviation ``sigma`` (of the [0, 1] range); other channel counts are denoised channel by channel."""
    try:
        import bm3d
    except ImportError:
        raise UserError(
            'The denoising baseline task.bm3d=true needs the bm3d package: pip install -e ".[bm3d]" '
            "(or set task.bm3d=false)."
        ) from None
    image = noisy[0].permute(1, 2, 0).double().cpu().numpy()
    if image.shape[-1] == 3:
        out = bm3d.bm3d_rgb(image, sigma)
    else:
        out = np.stack([bm3d.bm3d(image[..., c], sigma) for c in range(image.shape[-1])], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(2, 0, 1)[None]

"""The classical denoisers the DIP papers compare with: BM3D (Dabov et al. 2007) and its colour version CBM3D, from
the ``bm3d`` package (the authors' reference implementation; ``pip install -e ".[bm3d]"``), and non-local means
(Buades et al. 2005), from scikit-image."""

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


def nlm_denoise(
    noisy: torch.Tensor, sigma: float, h_factor: float | None = None, patch_size: int = 5, patch_distance: int = 6
) -> torch.Tensor:
    """Non-local means of a (1, C, H, W) image in [0, 1] for white Gaussian noise of standard deviation ``sigma``
    (of the [0, 1] range): scikit-image's ``denoise_nl_means`` in fast mode with the noise variance subtracted from
    the patch distances, 5×5 patches in a 13×13 search window, colour patches (channel_axis). Filtering strength
    h = ``h_factor``·σ; by default 0.8σ for grey images (scikit-image's rule) and 0.6σ for colour ones, whose patch
    distance averages the channels and so fluctuates less (0.6σ was the best of 0.4–1.2σ on three built-in colour
    images at σ = 25/255)."""
    from skimage.restoration import denoise_nl_means

    image = noisy[0].permute(1, 2, 0).double().cpu().numpy()
    if h_factor is None:
        h_factor = 0.6 if image.shape[-1] > 1 else 0.8
    out = denoise_nl_means(
        image,
        h=h_factor * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=patch_size,
        patch_distance=patch_distance,
        channel_axis=-1,
    )
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(image.shape).permute(2, 0, 1)[None]

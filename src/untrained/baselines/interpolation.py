"""Interpolation baselines: biharmonic inpainting of the unobserved pixels, bicubic upsampling."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import inpaint_biharmonic


def biharmonic(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The pixels where ``mask`` (1, H, W) is 0 filled by biharmonic inpainting (scikit-image) of ``y`` (1, C, H, W)."""
    image = y[0].permute(1, 2, 0).numpy()
    filled = inpaint_biharmonic(image, mask[0].numpy() == 0, channel_axis=-1)
    return torch.from_numpy(np.ascontiguousarray(filled, dtype=np.float32)).permute(2, 0, 1)[None]


def bicubic(y: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``y`` upsampled to ``shape`` (H, W) by bicubic interpolation, clipped to [0, 1]."""
    return F.interpolate(y, size=shape, mode="bicubic", align_corners=False).clamp(0, 1)

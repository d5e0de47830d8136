"""Image quality metrics (torchmetrics), computed on device without host synchronisation."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(x: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    return peak_signal_noise_ratio(x.float(), target.float(), data_range=data_range)


def ssim(x: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM with the standard 11-tap Gaussian window; NaN for signals or images too small for it."""
    if x.ndim != 4 or min(x.shape[-2:]) < 11:
        return torch.tensor(float("nan"), device=x.device)
    return structural_similarity_index_measure(x.float(), target.float(), data_range=data_range)

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


FASTMRI_SSIM_WINDOW = 7  # skimage.metrics.structural_similarity's default, which fastmri.evaluate.ssim keeps


def ssim_fastmri(x: torch.Tensor, target: torch.Tensor, data_range: float | None = None) -> torch.Tensor:
    """fastMRI's SSIM (``fastmri.evaluate.ssim``, i.e. scikit-image's ``structural_similarity`` defaults): a 7×7
    uniform window, sample covariances (×49/48), K1 = 0.01, K2 = 0.03, averaged over the window positions
    inside the image; ``data_range`` None: each image's target maximum (fastMRI: the volume's; one slice here).
    (B, C, H, W) → the mean over images and channels; NaN for images smaller than the window."""
    window = FASTMRI_SSIM_WINDOW
    if x.ndim != 4 or min(x.shape[-2:]) < window:
        return torch.tensor(float("nan"), device=x.device)
    x, target = x.double(), target.double()
    if data_range is None:
        peak = target.amax(dim=(1, 2, 3), keepdim=True)
    else:
        peak = torch.as_tensor(data_range, dtype=torch.float64, device=x.device)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    covariance_norm = window**2 / (window**2 - 1)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(t, window, stride=1)

    mean_x, mean_t = mean(x), mean(target)
    var_x = covariance_norm * (mean(x * x) - mean_x**2)
    var_t = covariance_norm * (mean(target * target) - mean_t**2)
    covariance = covariance_norm * (mean(x * target) - mean_x * mean_t)
    numerator = (2 * mean_x * mean_t + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_t**2 + c1) * (var_x + var_t + c2)
    return (numerator / denominator).mean(dim=(-2, -1)).mean().float()


def nmse(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """fastMRI's normalised MSE ‖target − x‖² / ‖target‖² (``fastmri.evaluate.nmse``), per image, then averaged."""
    x, target = x.double().flatten(1), target.double().flatten(1)
    return ((target - x).pow(2).sum(1) / target.pow(2).sum(1)).mean().float()

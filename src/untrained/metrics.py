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


# Calibration of uncertainty maps (docs/uncertainty.md) -----------------------------------------------------------
UCE_BINS = 21  # Laves et al.'s Bayesian DIP code (uncertainty-deep-image-prior, bayesian_denoising.py: n_bins=21)
CALIBRATION_BLOCK = 8  # side of the blocks whose means the block-level Spearman correlation compares


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1D tensor, ties given their average rank (as scipy.stats.rankdata)."""
    values = values.double()
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    # tied runs: positions where a new value starts
    starts = torch.ones_like(sorted_values, dtype=torch.bool)
    starts[1:] = sorted_values[1:] != sorted_values[:-1]
    run = torch.cumsum(starts.long(), 0) - 1
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64, device=values.device)
    counts = torch.zeros(int(run[-1]) + 1, dtype=torch.float64, device=values.device).index_add_(
        0, run, torch.ones_like(positions)
    )
    totals = torch.zeros_like(counts).index_add_(0, run, positions)
    result = torch.empty_like(positions)
    result[order] = (totals / counts)[run]
    return result


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally long sets of values (Pearson's of their average ranks); NaN
    when either is constant or there are fewer than two values."""
    a, b = a.reshape(-1), b.reshape(-1)
    if a.numel() < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def block_means(values: torch.Tensor, mask: torch.Tensor, block: int = CALIBRATION_BLOCK) -> torch.Tensor:
    """Means over ``block``-sided blocks (per channel) of (C, *spatial) values inside ``mask`` (same shape, 0/1);
    blocks with no pixel inside the mask, and the rows/columns past the last whole block, are left out."""
    pool = {1: torch.nn.functional.avg_pool1d, 2: torch.nn.functional.avg_pool2d}[values.dim() - 1]
    mask = mask.double()
    sums = pool((values.double() * mask)[None], block)[0]
    counts = pool(mask[None], block)[0]
    inside = counts > 0
    return sums[inside] / counts[inside]


def calibration_bins(
    squared_errors: torch.Tensor, variances: torch.Tensor, bins: int = UCE_BINS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The values binned by predicted variance into ``bins`` equal-width bins over [min, max] of the variances (one
    bin when they are all equal): each filled bin's mean variance, MSE and count (the calibration diagram)."""
    errors, variances = squared_errors.reshape(-1).double().cpu(), variances.reshape(-1).double().cpu()
    low, high = float(variances.min()), float(variances.max())
    span = high - low if high > low else 1.0
    index = ((variances - low) / span * bins).long().clamp(0, bins - 1)
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(errors))
    error_sum = torch.zeros_like(count).index_add_(0, index, errors)
    variance_sum = torch.zeros_like(count).index_add_(0, index, variances)
    filled = count > 0
    return variance_sum[filled] / count[filled], error_sum[filled] / count[filled], count[filled]


def uncertainty_calibration_error(squared_errors: torch.Tensor, variances: torch.Tensor, bins: int = UCE_BINS) -> float:
    """UCE of Laves et al. ("Well-calibrated regression uncertainty in medical imaging with deep learning", MIDL
    2020), over ``calibration_bins``: UCE = Σ_m |B_m| / n · |MSE(B_m) − mean variance(B_m)|; 0 when the variance
    predicts the squared error in every bin."""
    variance, mse, count = calibration_bins(squared_errors, variances, bins)
    return float((count * (mse - variance).abs()).sum() / count.sum())


def calibration(
    error: torch.Tensor,
    std: torch.Tensor,
    mask: torch.Tensor | None = None,
    bins: int = UCE_BINS,
    block: int = CALIBRATION_BLOCK,
) -> dict[str, float]:
    """How well a per-pixel std predicts the error (C, *spatial) of a reconstruction, over the pixels inside
    ``mask`` (all when None): Spearman's correlation of |error| and std over pixels and over ``block`` blocks' means,
    the UCE (squared error against variance), and the coverage: the fraction of pixels with |error| ≤ 2 std."""
    error, std = error.double().abs(), std.double()
    mask = torch.ones_like(error) if mask is None else mask.double().expand_as(error)
    inside = mask > 0
    e, s = error[inside], std[inside]
    return {
        "spearman_pixels": spearman(e, s),
        "spearman_blocks": spearman(block_means(error, mask, block), block_means(std, mask, block)),
        "uce": uncertainty_calibration_error(e.square(), s.square(), bins),
        "coverage_2std": float((e <= 2 * s).double().mean()),
    }

"""Denoising: y = x + n, A = I (Ulyanov et al. 2018, Sec. 4); Gaussian by default, or any model of
:mod:`untrained.operators.noise` (e.g. salt-and-pepper for DOP)."""

from __future__ import annotations

from untrained.baselines.denoisers import bm3d_denoise, nlm_denoise
from untrained.baselines.tv import tv_pdhg
from untrained.errors import check_at_least
from untrained.operators.base import Identity
from untrained.operators.noise import apply_noise, gaussian_sigma
from untrained.problem import InverseProblem
from untrained.tasks.images import load_image, load_measurement


def denoising(
    image: str = "astronaut",
    size=256,
    sigma: float = 25.0,
    sigma_units: str = "255",
    clip: bool = True,
    grayscale: bool | None = None,
    index: int = 0,
    noise_seed: int = 0,
    tv_weight: float | None = None,
    noise: str = "gaussian",
    noise_level: float | None = None,
    bm3d: bool = True,
    nlm: bool = False,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    measurement: str | None = None,
) -> InverseProblem:
    """Noisy copy of ``image``; ``clip`` keeps the noisy image in [0, 1] as the DIP paper does. ``measurement``: a
    noisy image file instead (no ground truth; the noise options then describe its noise, for the baselines).

    Gaussian noise takes its level from ``sigma``/``sigma_units``; other models from ``noise_level``.
    ``bm3d``: add the BM3D (grey) / CBM3D (colour) baseline for Gaussian noise, given the known σ;
    ``nlm``: add the non-local means baseline (Gaussian noise only, filtering strength from the known σ)."""
    if noise_level is not None:  # read by the non-Gaussian models only, but never meaningful when negative
        check_at_least("task.noise_level", noise_level, 0)
    if tv_weight is not None:
        check_at_least("task.tv_weight", tv_weight, 0)
    gaussian_level = gaussian_sigma(sigma, sigma_units)  # checked also when another noise model ignores it
    level = gaussian_level if noise == "gaussian" else noise_level
    if measurement is None:
        x_true = load_image(image, size, grayscale, index)
        y = apply_noise(x_true, noise, level, noise_seed)
        y = y.clamp(0, 1) if clip else y
    else:
        x_true, y = None, load_measurement(measurement, grayscale)
    if tv_weight is None:  # the noise's standard deviation
        tv_weight = max(level if noise == "gaussian" else noise_std(y, x_true), 1e-3)
    operator = Identity(tuple(y.shape[1:]))
    tv = tv_pdhg(operator, y, tv_weight, y, (0.0, 1.0), tv_max_iterations, tv_tolerance, operator_norm_value=1.0)
    baselines = {"noisy": y, "tv": tv.image}
    if bm3d and noise == "gaussian" and level > 0:  # BM3D's noise model: white Gaussian of known σ
        baselines["cbm3d" if y.shape[1] == 3 else "bm3d"] = bm3d_denoise(y, level)
    if nlm and noise == "gaussian" and level > 0:
        baselines["nlm"] = nlm_denoise(y, level)
    return InverseProblem(
        name="denoising",
        operator=operator,
        y=y,
        image_shape=tuple(y.shape[1:]),
        x_true=x_true,
        init=y,
        init_from=lambda measured: measured,
        baselines=baselines,
        info={
            "image": str(image) if measurement is None else None,
            "measurement": None if measurement is None else str(measurement),
            "noise": noise,
            "sigma": level,
            "baseline_iterations": {"tv": tv.iterations},
            "baseline_converged": {"tv": tv.converged},
        },
    )


def noise_std(y, x_true) -> float:
    """The noise's standard deviation: measured against the ground truth, or estimated from y alone (wavelet
    median absolute deviation, scikit-image's ``estimate_sigma``)."""
    if x_true is not None:
        return (y - x_true).std().item()
    from skimage.restoration import estimate_sigma

    image = y[0].detach().cpu().numpy()
    if image.shape[0] == 1:
        return float(estimate_sigma(image[0]))
    return float(estimate_sigma(image, channel_axis=0, average_sigmas=True))

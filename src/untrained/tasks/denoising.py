"""Denoising: y = x + n, A = I (Ulyanov et al. 2018, Sec. 4); Gaussian by default, or any model of
:mod:`untrained.operators.noise` (e.g. salt-and-pepper for DOP)."""

from __future__ import annotations

from untrained.baselines.denoisers import bm3d_denoise, nlm_denoise
from untrained.baselines.tv import tv_pdhg
from untrained.errors import check_at_least
from untrained.operators.base import Identity
from untrained.operators.noise import apply_noise, gaussian_sigma
from untrained.problem import InverseProblem
from untrained.tasks.images import load_image


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
) -> InverseProblem:
    """Noisy copy of ``image``; ``clip`` keeps the noisy image in [0, 1] as the DIP paper does.

    Gaussian noise takes its level from ``sigma``/``sigma_units``; other models from ``noise_level``.
    ``bm3d``: add the BM3D (grey) / CBM3D (colour) baseline for Gaussian noise, given the known σ;
    ``nlm``: add the non-local means baseline (Gaussian noise only, filtering strength from the known σ)."""
    if noise_level is not None:  # read by the non-Gaussian models only, but never meaningful when negative
        check_at_least("task.noise_level", noise_level, 0)
    if tv_weight is not None:
        check_at_least("task.tv_weight", tv_weight, 0)
    gaussian_level = gaussian_sigma(sigma, sigma_units)  # checked also when another noise model ignores it
    level = gaussian_level if noise == "gaussian" else noise_level
    x_true = load_image(image, size, grayscale, index)
    y = apply_noise(x_true, noise, level, noise_seed)
    if clip:
        y = y.clamp(0, 1)
    if tv_weight is None:  # the noise's standard deviation
        tv_weight = max(level if noise == "gaussian" else (y - x_true).std().item(), 1e-3)
    operator = Identity(tuple(x_true.shape[1:]))
    tv = tv_pdhg(operator, y, tv_weight, y, (0.0, 1.0), tv_max_iterations, tv_tolerance, operator_norm_value=1.0)
    baselines = {"noisy": y, "tv": tv.image}
    if bm3d and noise == "gaussian" and level > 0:  # BM3D's noise model: white Gaussian of known σ
        baselines["cbm3d" if x_true.shape[1] == 3 else "bm3d"] = bm3d_denoise(y, level)
    if nlm and noise == "gaussian" and level > 0:
        baselines["nlm"] = nlm_denoise(y, level)
    return InverseProblem(
        name="denoising",
        operator=operator,
        y=y,
        image_shape=tuple(x_true.shape[1:]),
        x_true=x_true,
        init=y,
        baselines=baselines,
        info={
            "image": str(image),
            "noise": noise,
            "sigma": level,
            "baseline_iterations": {"tv": tv.iterations},
            "baseline_converged": {"tv": tv.converged},
        },
    )

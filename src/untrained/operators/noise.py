"""Seeded measurement noise: Gaussian, Poisson, salt-and-pepper and random-valued impulse noise."""

from __future__ import annotations

import torch

from untrained.errors import UserError, check_at_least, check_in_range, check_positive

NOISE_MODELS = ("gaussian", "poisson", "salt_pepper", "impulse", "none")


def gaussian_sigma(sigma: float, units: str = "255") -> float:
    """Noise level as a fraction of the [0, 1] range; ``units`` '255' means sigma is given in 8-bit levels."""
    check_at_least("task.sigma", sigma, 0)
    if units not in ("255", "fraction"):
        raise UserError(f"task.sigma_units must be '255' or 'fraction', got '{units}'.")
    return sigma / 255.0 if units == "255" else float(sigma)


def add_gaussian(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=x.real.dtype)
    if x.is_complex():
        noise = torch.complex(noise, torch.randn(x.shape, generator=g, dtype=x.real.dtype)) / 2**0.5
    return x + sigma * noise.to(x.device)


def apply_noise(x: torch.Tensor, model: str = "gaussian", level: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Corrupt a real image in [0, 1].

    gaussian: ``level`` = std (fraction of the range); poisson: ``level`` = peak photon count
    (y = Poisson(peak·x)/peak); salt_pepper: ``level`` = fraction of pixels set to 0 or 1;
    impulse: ``level`` = fraction of pixels replaced by uniform random values.
    """
    if model not in NOISE_MODELS:
        raise UserError(f"Unknown task.noise '{model}': choose one of {', '.join(NOISE_MODELS)}.")
    if level is not None or model != "none":
        check_at_least("task.noise_level", level, 0)
    if model == "poisson":
        check_positive("task.noise_level (the Poisson peak)", level)
    elif model in ("salt_pepper", "impulse"):
        check_in_range("task.noise_level (the fraction of corrupted pixels)", level, 0, 1)
    if model == "none" or (level == 0 and model != "poisson"):
        return x.clone()
    g = torch.Generator().manual_seed(seed)
    if model == "gaussian":
        return add_gaussian(x, level, seed)
    if model == "poisson":
        return torch.poisson(x.clamp(min=0) * level, generator=g) / level
    hit = torch.rand(x.shape, generator=g) < level
    values = torch.rand(x.shape, generator=g)
    if model == "salt_pepper":
        values = (values < 0.5).to(x.dtype)
    return torch.where(hit, values, x)

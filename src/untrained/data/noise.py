"""Seeded measurement noise: Gaussian, Poisson, salt-and-pepper and random-valued impulse noise."""

from __future__ import annotations

import torch

from untrained.errors import UserError

NOISE_MODELS = ("gaussian", "poisson", "salt_pepper", "impulse", "none")


def gaussian_sigma(sigma: float, units: str = "255") -> float:
    """Noise level as a fraction of the [0, 1] range; ``units`` '255' means sigma is given in 8-bit levels."""
    if sigma is None or sigma < 0:
        raise UserError(f"task.sigma must be >= 0, got {sigma}: give the noise standard deviation.")
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
    if level is None or level < 0:
        raise UserError(f"The noise level must be >= 0, got {level}.")
    if model == "none" or (level == 0 and model != "poisson"):
        return x.clone()
    g = torch.Generator().manual_seed(seed)
    if model == "gaussian":
        return add_gaussian(x, level, seed)
    if model == "poisson":
        if level <= 0:
            raise UserError("Poisson noise needs a positive peak (task.noise_level), e.g. 30.")
        return torch.poisson(x.clamp(min=0) * level, generator=g) / level
    if level > 1:
        raise UserError(f"The fraction of corrupted pixels must be in [0, 1], got {level}.")
    hit = torch.rand(x.shape, generator=g) < level
    values = torch.rand(x.shape, generator=g)
    if model == "salt_pepper":
        values = (values < 0.5).to(x.dtype)
    return torch.where(hit, values, x)

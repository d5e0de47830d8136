"""Seeded measurement noise."""

from __future__ import annotations

import torch

from untrained.errors import UserError


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

"""Synthetic ground truths and CT measurements: random-ellipse phantoms (Educated DIP's training data) and
noisy post-log sinograms.

CT images are attenuation normalised to [0, 1] by μ_max (LoDoPaB's convention: μ_water = 20 m⁻¹,
μ_max = 81.35858 m⁻¹, i.e. 3071 HU), on a 26 cm field of view.
"""

from __future__ import annotations

import numpy as np
import torch

from untrained.errors import check_at_least, check_positive
from untrained.operators.ct import ParallelBeamTransform

MU_WATER, MU_AIR, MU_MAX = 20.0, 0.02, 81.35858  # m⁻¹
FIELD_OF_VIEW = 0.26  # m, the side of the reconstructed square


def random_ellipses(size: int, seed: int, count: int = 12) -> np.ndarray:
    """A seeded phantom of overlapping ellipses with random intensities in a disc (Educated DIP's data)."""
    rng = np.random.default_rng(seed)
    coords = np.linspace(-1, 1, size)
    x, y = np.meshgrid(coords, coords, indexing="xy")
    image = np.zeros((size, size))
    for _ in range(count):
        value = rng.uniform(-0.4, 1.0)
        a, b = rng.uniform(0.05, 0.5, size=2)
        cx, cy = rng.uniform(-0.6, 0.6, size=2)
        angle = rng.uniform(0, np.pi)
        xr = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        yr = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        image[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += value
    image *= x**2 + y**2 <= 0.95**2
    image = np.clip(image, 0, None)
    return (image / max(image.max(), 1e-6)).astype(np.float32)


def simulate_sinogram(
    operator: ParallelBeamTransform, x: torch.Tensor, photons: float | None, gaussian_std: float, seed: int
) -> torch.Tensor:
    """Post-log line integrals (of the normalised operator) with Poisson and Gaussian noise."""
    clean = operator(x)
    if photons is None and gaussian_std == 0:
        return clean
    generator = torch.Generator().manual_seed(seed)
    noisy = clean
    if photons is not None:
        check_positive("task.photons (incident photons per ray, or null)", photons)
        # Physical line integrals: normalised sinogram × ||R|| × μ_max × (field of view / 2, the ODL extent unit).
        to_physical = operator.norm * MU_MAX * FIELD_OF_VIEW / 2
        counts = torch.poisson(photons * torch.exp(-clean * to_physical), generator=generator)
        noisy = -torch.log(counts.clamp(min=0.1) / photons) / to_physical
    check_at_least("task.gaussian_std", gaussian_std, 0)
    if gaussian_std > 0:
        noisy = noisy + gaussian_std * clean.abs().max() * torch.randn(clean.shape, generator=generator)
    return noisy

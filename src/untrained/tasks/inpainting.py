"""Inpainting: y = m ⊙ x (+ noise) with random pixels, random holes, a centred box, text, or a mask file; or a damaged
image (``task.measurement``) with the mask of its observed pixels (``task.mask=file``), without a ground truth."""

from __future__ import annotations

import torch

from untrained.baselines.interpolation import biharmonic
from untrained.baselines.tv import tv_pdhg
from untrained.errors import UserError
from untrained.operators.generators.masks import make_mask
from untrained.operators.inpainting import Mask
from untrained.operators.noise import apply_noise
from untrained.problem import InverseProblem
from untrained.tasks.images import load_image, load_measurement


def inpainting(
    image: str = "chelsea",
    index: int = 0,
    size=256,
    grayscale: bool | None = None,
    mask: str = "boxes",
    keep_ratio: float = 0.5,
    hole_ratio: float = 0.25,
    mask_path: str | None = None,
    mask_seed: int = 0,
    noise: str = "none",
    noise_level: float = 0.0,
    noise_seed: int = 0,
    tv_weight: float = 3e-2,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    measurement: str | None = None,
) -> InverseProblem:
    if measurement is not None and mask != "file":
        raise UserError(
            f"task.measurement needs the mask of its observed pixels, not task.mask={mask}: give task.mask=file "
            "task.mask_path=<.png/.npy of the image's size, 1 (white) = observed>."
        )
    x_true = load_image(image, size, grayscale, index) if measurement is None else None
    damaged = load_measurement(measurement, grayscale) if measurement is not None else None
    shape = tuple((x_true if damaged is None else damaged).shape[1:])
    observed = make_mask(mask, shape[1:], mask_seed, keep_ratio, hole_ratio, mask_path)
    operator = Mask(observed, shape)
    with torch.no_grad():
        y = operator(apply_noise(x_true, noise, noise_level, noise_seed) if damaged is None else damaged)
    filled = biharmonic(y, observed)
    tv = tv_pdhg(operator, y, tv_weight, filled, (0.0, 1.0), tv_max_iterations, tv_tolerance, operator_norm_value=1.0)
    return InverseProblem(
        name="inpainting",
        operator=operator,
        y=y,
        image_shape=shape,
        x_true=x_true,
        init=y,
        holdable=observed[None].bool(),
        init_from=lambda measured: measured,
        baselines={"masked": y, "biharmonic": filled, "tv": tv.image},
        info={
            "image": image if measurement is None else None,
            "measurement": None if measurement is None else str(measurement),
            "mask": mask,
            "missing_fraction": float(1 - observed.mean()),
            "baseline_iterations": {"tv": tv.iterations},
            "baseline_converged": {"tv": tv.converged},
        },
    )

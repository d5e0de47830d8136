"""Super-resolution ×4 / ×8 with the DIP paper's Lanczos-2 downsampler (or bicubic); or a low-resolution image
(``task.measurement``) upscaled by the factor, without a ground truth."""

from __future__ import annotations

import torch

from untrained.baselines.interpolation import bicubic
from untrained.baselines.tv import tv_pdhg
from untrained.errors import check_integer
from untrained.metrics import psnr
from untrained.operators.noise import apply_noise
from untrained.operators.super_resolution import Downsample
from untrained.problem import InverseProblem
from untrained.tasks.images import MAX_IMAGE_SIZE, load_image, load_measurement


def luminance(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in [0, 1] (the SR literature's Y channel); grey images are their own luma."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([65.481, 128.553, 24.966], device=x.device).view(1, 3, 1, 1) / 255.0
    return (x * weights).sum(1, keepdim=True) + 16.0 / 255.0


def super_resolution(
    image: str = "chelsea",
    index: int = 0,
    size=256,
    grayscale: bool | None = None,
    factor: int = 4,
    kernel: str = "lanczos2",
    noise: str = "none",
    noise_level: float = 0.0,
    noise_seed: int = 0,
    border_crop: bool = True,
    tv_weight: float = 1e-3,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    measurement: str | None = None,
) -> InverseProblem:
    if measurement is not None:  # a low-resolution image: the result is factor times its size
        check_integer("task.factor", factor, 1, MAX_IMAGE_SIZE)
        low = load_measurement(measurement, grayscale)
        shape = (low.shape[1], low.shape[2] * factor, low.shape[3] * factor)
        source = {"measurement": str(measurement)}
        return super_resolution_problem(
            low, None, shape, factor, kernel, border_crop, tv_weight, tv_max_iterations, tv_tolerance, source
        )
    x_true = load_image(image, size, grayscale, index)
    if size is None and isinstance(factor, int) and factor >= 1:
        # The file's own size, centre-cropped to multiples of the factor (the SR literature's "modcrop").
        height, width = x_true.shape[-2:]
        top, left = height % factor // 2, width % factor // 2
        x_true = x_true[..., top : top + height - height % factor, left : left + width - width % factor]
    shape = tuple(x_true.shape[1:])
    with torch.no_grad():
        y = apply_noise(Downsample(factor, shape, kernel)(x_true), noise, noise_level, noise_seed)
    return super_resolution_problem(
        y, x_true, shape, factor, kernel, border_crop, tv_weight, tv_max_iterations, tv_tolerance, {"image": image}
    )


def super_resolution_problem(
    y, x_true, shape, factor, kernel, border_crop, tv_weight, tv_max_iterations, tv_tolerance, source: dict
) -> InverseProblem:
    """The problem of a low-resolution y of the high-resolution ``shape``; ``x_true`` None: no ground truth."""
    operator = Downsample(factor, shape, kernel)
    upsampled = bicubic(y, shape[1:])
    tv = tv_pdhg(operator, y, tv_weight, upsampled, (0.0, 1.0), tv_max_iterations, tv_tolerance)
    crop = factor if border_crop else 0

    def luminance_psnr(x: torch.Tensor) -> dict[str, torch.Tensor]:
        region = (..., slice(crop, x.shape[-2] - crop), slice(crop, x.shape[-1] - crop))
        return {"psnr_y": psnr(luminance(x.clamp(0, 1))[region], luminance(x_true.to(x.device))[region])}

    return InverseProblem(
        name="super_resolution",
        operator=operator,
        y=y,
        image_shape=shape,
        x_true=x_true,
        init=upsampled,
        init_from=lambda measured: bicubic(measured, shape[1:]),
        baselines={"bicubic": upsampled, "tv": tv.image},
        extra_metrics=luminance_psnr if x_true is not None else None,
        metric_conventions={
            "psnr_y": f"PSNR (data_range 1) of the luminance Y (ITU-R BT.601, as in the SR literature) of x clamped to "
            f"[0, 1], {crop} border pixels cropped on each side"
        }
        if x_true is not None
        else {},
        info={
            **source,
            "factor": factor,
            "kernel": kernel,
            "baseline_iterations": {"tv": tv.iterations},
            "baseline_converged": {"tv": tv.converged},
        },
    )

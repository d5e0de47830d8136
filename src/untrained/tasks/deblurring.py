"""Deblurring: y = k * x + n with a known (or, semi-blind, approximately known) kernel, and a
non-linear variant (blur followed by a saturating camera response); or a blurred image (``task.measurement``) with
its kernel, without a ground truth."""

from __future__ import annotations

import torch

from untrained.baselines.linear import wiener_deconvolution
from untrained.baselines.tv import tv_pdhg
from untrained.errors import UserError, check_positive
from untrained.operators.blur import Blur, SaturatedBlur, make_kernel
from untrained.operators.noise import apply_noise
from untrained.problem import InverseProblem
from untrained.tasks.images import load_image, load_measurement


def deblurring(
    image: str = "chelsea",
    index: int = 0,
    size=256,
    grayscale: bool | None = None,
    kernel: dict | None = None,
    true_kernel: dict | None = None,
    boundary: str = "circular",
    noise: str = "gaussian",
    noise_level: float = 0.01,
    noise_seed: int = 0,
    wiener_alpha: float = 1e-3,
    tv_weight: float = 3e-4,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    gain: float | None = None,
    measurement: str | None = None,
) -> InverseProblem:
    """``kernel`` is the operator's (assumed) kernel; ``true_kernel``, when given, generates the data
    (semi-blind deblurring). ``gain`` > 0 makes the model non-linear (camera response after the blur).
    ``measurement``: a blurred image file instead (no ground truth; ``noise_level`` is recorded as its known noise
    level); with ``boundary=valid`` the image is larger than it by the kernel's size − 1."""
    check_positive("task.wiener_alpha", wiener_alpha)
    nonlinear = gain is not None  # gain 0 is not "linear": SaturatedBlur refuses it
    if measurement is None:
        x_true = load_image(image, size, grayscale, index)
        shape = tuple(x_true.shape[1:])
        kernel_image = make_kernel(**(kernel or {}), option="task.kernel", max_size=min(shape[1:]))
    else:
        if true_kernel:
            raise UserError(
                "task.true_kernel simulates data; a measured image (task.measurement) has its own: give task.kernel "
                "(the assumed kernel) and task.true_kernel=null."
            )
        x_true, measured = None, load_measurement(measurement, grayscale)
        kernel_image = make_kernel(**(kernel or {}), option="task.kernel", max_size=min(measured.shape[2:]))
        grow = [n - 1 if boundary == "valid" else 0 for n in kernel_image.shape[-2:]]
        shape = (measured.shape[1], measured.shape[2] + grow[0], measured.shape[3] + grow[1])
    blur = Blur(kernel_image, shape, boundary)
    data_blur = (
        Blur(make_kernel(**true_kernel, option="task.true_kernel", max_size=min(shape[1:])), shape, boundary)
        if true_kernel
        else blur
    )
    operator, data_operator = (blur, data_blur)
    if nonlinear:
        operator, data_operator = SaturatedBlur(blur, gain), SaturatedBlur(data_blur, gain)
    with torch.no_grad():
        y = apply_noise(data_operator(x_true), noise, noise_level, noise_seed) if x_true is not None else measured
    linear_data = y if not nonlinear else -torch.log1p(-y.clamp(max=0.999) * -torch.expm1(torch.tensor(-gain))) / gain
    wiener = wiener_deconvolution(linear_data, blur, wiener_alpha).clamp(0, 1)
    # Non-linear model: TV on the linearised data (the camera response inverted), a linear problem.
    tv = tv_pdhg(blur, linear_data, tv_weight, wiener, (0.0, 1.0), tv_max_iterations, tv_tolerance)
    baselines = {"wiener": wiener, "tv": tv.image}
    init = y if tuple(y.shape[1:]) == shape else wiener
    if init is y:
        baselines["blurred"] = y

    def init_from(measured: torch.Tensor) -> torch.Tensor:
        """The init of a measurement: itself (same size) or its Wiener deconvolution (valid boundary)."""
        if tuple(measured.shape[1:]) == shape:
            return measured
        linear = (
            measured
            if not nonlinear
            else -torch.log1p(-measured.clamp(max=0.999) * -torch.expm1(torch.tensor(-gain))) / gain
        )
        return wiener_deconvolution(linear, blur, wiener_alpha).clamp(0, 1)

    name = "nonlinear_deblurring" if nonlinear else ("semi_blind_deblurring" if true_kernel else "deblurring")
    return InverseProblem(
        name=name,
        operator=operator,
        y=y,
        image_shape=shape,
        x_true=x_true,
        init=init,
        init_from=init_from,
        baselines=baselines,
        info={
            "image": image if measurement is None else None,
            "measurement": None if measurement is None else str(measurement),
            "noise": noise,
            "noise_level": noise_level,
            "boundary": boundary,
            "kernel": dict(kernel or {}),
            "true_kernel": dict(true_kernel) if true_kernel else None,
            "gain": gain,
            "baseline_iterations": {"tv": tv.iterations},
            "baseline_converged": {"tv": tv.converged},
        },
    )

"""DeepRED (Mataev, Elad & Milanfar, ICCV Workshops 2019): DIP + Regularization by Denoising, by ADMM.

The problem min_θ ||A f_θ(z) − y||² + (λ/2)·xᵀ(x − D(x)) with x = f_θ(z) is split with an auxiliary image
x and a scaled Lagrange multiplier u. Per training step:

1. network: one Adam step on  mean|A f_θ(z) − y|² + μ·mean|f_θ(z) − (x − u)|²;
2. x: the RED fixed-point step  x ← (λ·D(x) + μ·(f_θ(z) + u)) / (λ + μ), clipped to the image range,
   with D(x) refreshed every ``denoise_every`` steps (the denoiser runs on the CPU for NLM / BM3D);
3. u ← u + f_θ(z) − x.

As in the reference (github.com/GaryMataev/DeepRED, ``train_via_admm`` in denoising.ipynb) λ and μ grow by
``increase_reg`` whenever the fit PSNR −10·log10(mean|A f − y|²) exceeds a threshold, which then rises by
``threshold_step``; the estimate is the exponential average of the outputs (0.99). The reference computes
D(x) in a background thread and uses it ``denoise_every`` steps later; here it is computed in place.

The denoiser is any callable mapping a (1, C, H, W) tensor to one of the same shape: 'nlm' (scikit-image
non-local means, the paper's default), 'bm3d' (the ``bm3d`` package, optional) or the path of a
TorchScript model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_integer, check_number, check_positive
from untrained.methods.base import Method, StepOutput, penalty_scale
from untrained.operators.noise import gaussian_sigma
from untrained.problem import InverseProblem


def per_channel(denoise: Callable[[np.ndarray], np.ndarray], image: torch.Tensor) -> torch.Tensor:
    """Apply a 2D numpy denoiser to each channel of a (1, C, H, W) tensor (on the CPU)."""
    if image.dim() != 4:
        raise UserError("The DeepRED denoisers 'nlm' and 'bm3d' work on 2D images: use another method for 1D tasks.")
    channels = image.detach().float().cpu().numpy()[0]
    denoised = np.stack([denoise(channel) for channel in channels]).astype(np.float32)
    return torch.from_numpy(denoised)[None].to(image.device)


class NonLocalMeans:
    """scikit-image non-local means with the DeepRED reference's settings (``non_local_means``).

    h = 0.6σ (fast mode) or 0.8σ, 5×5 patches, 13×13 search window; σ in 8-bit levels by default.
    """

    def __init__(
        self,
        sigma: float = 3.0,
        sigma_units: str = "255",
        fast_mode: bool = True,
        patch_size: int = 5,
        patch_distance: int = 6,
    ):
        self.sigma = gaussian_sigma(sigma, sigma_units)
        self.kwargs = dict(
            h=(0.6 if fast_mode else 0.8) * self.sigma,
            sigma=self.sigma,
            fast_mode=fast_mode,
            patch_size=patch_size,
            patch_distance=patch_distance,
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import denoise_nl_means

        return per_channel(lambda channel: denoise_nl_means(channel, **self.kwargs), image)


class BM3D:
    """BM3D from the optional ``bm3d`` package (``pip install bm3d``), channel by channel."""

    def __init__(self, sigma: float = 3.0, sigma_units: str = "255"):
        try:
            import bm3d
        except ImportError:
            raise UserError("method.denoiser=bm3d needs the bm3d package: pip install bm3d (or use nlm).") from None
        self.bm3d, self.sigma = bm3d.bm3d, gaussian_sigma(sigma, sigma_units)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return per_channel(lambda channel: self.bm3d(channel, sigma_psd=self.sigma), image)


class TorchScriptDenoiser:
    """A denoiser network saved with ``torch.jit.save``; runs on the image's device without gradients."""

    def __init__(self, path: str):
        if not Path(path).is_file():
            raise UserError(f"DeepRED denoiser '{path}' is neither 'nlm', 'bm3d' nor a TorchScript file.")
        self.model = torch.jit.load(path, map_location="cpu").eval()

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.to(image.device)(image)


def make_denoiser(denoiser: str | Callable, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(denoiser):
        return denoiser
    if denoiser == "nlm":
        return NonLocalMeans(sigma)
    if denoiser == "bm3d":
        return BM3D(sigma)
    return TorchScriptDenoiser(denoiser)


class DeepRED(Method):
    """DIP + RED by ADMM (see the module docstring).

    Args:
        denoiser: 'nlm', 'bm3d', a TorchScript path, or (from Python) any tensor → tensor callable.
        denoiser_sigma: noise level handed to NLM / BM3D, in 8-bit levels (reference: 3).
        red_weight: λ (the reference's beta).
        mu: the ADMM penalty μ.
        denoise_every: steps between denoiser calls.
        x_range: [low, high] clip of x after its update (null: no clip, e.g. MRI's real/imaginary channels).
        fit_threshold, threshold_step, increase_reg: the reference's schedule that raises λ and μ once the
            output fits the measurement to ``fit_threshold`` dB (increase_reg = 0 turns it off).
        **kwargs: the options of :class:`Method` (lr, input, reg_noise_std, exp_weight, ...).
    """

    name = "deepred"
    capturable_step = False  # ADMM updates with a host-side denoiser

    def __init__(
        self,
        denoiser: str | Callable = "nlm",
        denoiser_sigma: float = 3.0,
        red_weight: float = 0.5,
        mu: float = 0.5,
        denoise_every: int = 10,
        x_range: list[float] | None = (0.0, 1.0),
        fit_threshold: float = 20.0,
        threshold_step: float = 0.01,
        increase_reg: float = 0.03,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("method.denoiser_sigma", denoiser_sigma)
        check_at_least("method.red_weight", red_weight, 0)
        check_positive("method.mu", mu)
        check_integer("method.denoise_every", denoise_every, 1)
        check_number("method.fit_threshold", fit_threshold)  # dB: any value (a negative one strengthens at once)
        check_at_least("method.threshold_step", threshold_step, 0)
        check_at_least("method.increase_reg", increase_reg, 0)  # a negative one would drive μ to 0 and below
        if x_range is not None and not (
            len(x_range) == 2 and all(isinstance(v, (int, float)) for v in x_range) and x_range[0] < x_range[1]
        ):
            raise UserError(f"method.x_range must be [low, high] with low < high, or null, got {x_range}.")
        self.denoiser = make_denoiser(denoiser, denoiser_sigma)
        self.initial_red_weight, self.initial_mu, self.denoise_every = red_weight, mu, denoise_every
        self.x_range = tuple(x_range) if x_range is not None else None
        self.initial_threshold, self.threshold_step, self.increase_reg = fit_threshold, threshold_step, increase_reg

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        self.penalty_scale = penalty_scale(problem, "squared")  # of μ in the network's loss (docs/weights.md)
        x = problem.init.detach().clone() if problem.init is not None else torch.zeros(1, *problem.image_shape)
        self.register_buffer("x", x)
        self.register_buffer("u", torch.zeros_like(x))
        self.register_buffer("denoised", x.clone())
        self.register_buffer("red_weight", torch.tensor(float(self.initial_red_weight)))
        self.register_buffer("mu", torch.tensor(float(self.initial_mu)))
        self.register_buffer("threshold", torch.tensor(float(self.initial_threshold)))

    def regularizer(self, output: torch.Tensor, problem: InverseProblem, step: int) -> dict[str, torch.Tensor]:
        return {"admm": self.mu * self.penalty_scale * ((output - (self.x - self.u)) ** 2).mean()}

    def optimization_step(
        self, network: nn.Module, problem: InverseProblem, step: int, optimizer, backward: Callable
    ) -> StepOutput:
        """One ADMM iteration: the network step, then the x and u steps (the host-side denoiser makes
        this an update rule of its own, which batched fits do not vmap)."""
        out = super().optimization_step(network, problem, step, optimizer, backward)
        self.admm_update(out.output.detach(), out.logs["data_loss"], step)
        return out

    @torch.no_grad()
    def admm_update(self, output: torch.Tensor, data_loss: torch.Tensor, step: int) -> None:
        if step % self.denoise_every == 0:
            self.denoised.copy_(self.denoiser(self.x))
        x = (self.red_weight * self.denoised + self.mu * (output + self.u)) / (self.red_weight + self.mu)
        self.x.copy_(x.clamp(*self.x_range) if self.x_range is not None else x)
        self.u.add_(output - self.x)
        # The reference's schedule, on the device: strengthen the prior once the output fits y closely.
        fitted = (-10 * torch.log10(data_loss.clamp_min(1e-12)) > self.threshold).float()
        self.red_weight.add_(self.increase_reg * fitted)
        self.mu.add_(self.increase_reg * fitted)
        self.threshold.add_(self.threshold_step * fitted)

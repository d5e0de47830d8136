"""The inverse problem a run solves: measurement, forward operator, ground truth and baselines.

Networks work in a real "network space" of shape ``image_shape`` = (C, *spatial). The operator may
act on another representation (e.g. complex MRI images); ``to_domain``/``from_domain`` convert.
All tensors carry a leading batch dimension of 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from untrained.errors import UserError
from untrained.metrics import psnr, ssim
from untrained.operators.base import (
    Identity,
    LinearOperator,
    Operator,
    masked,
    mean_squared_magnitude,
    operator_norm,
)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


HOLDOUT_PATTERNS = ("random", "cells")


def check_holdout_options(fraction: float, pattern: str) -> None:
    if pattern not in HOLDOUT_PATTERNS:
        raise UserError(f"callbacks.early_stopping.pattern must be one of {HOLDOUT_PATTERNS}, got {pattern!r}.")
    if not 0 < fraction <= 0.5:
        raise UserError(
            f"callbacks.early_stopping.fraction must be in (0, 0.5] (the share of measurements held out), "
            f"got {fraction}."
        )


class InverseProblem(nn.Module):
    def __init__(
        self,
        name: str,
        operator: Operator,
        y: torch.Tensor,
        image_shape: tuple[int, ...],
        x_true: torch.Tensor | None = None,
        init: torch.Tensor | None = None,
        baselines: dict[str, torch.Tensor] | None = None,
        to_domain: Callable[[torch.Tensor], torch.Tensor] = identity,
        from_domain: Callable[[torch.Tensor], torch.Tensor] = identity,
        to_display: Callable[[torch.Tensor], torch.Tensor] | None = None,
        data_range: float = 1.0,
        extra_metrics: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
        info: dict | None = None,
        metric_conventions: dict[str, str] | None = None,
        holdable: torch.Tensor | None = None,
        init_from: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        if not torch.isfinite(y).all():
            raise UserError(
                f"The {name} measurement contains NaN or Inf values: check the input data and the task's noise options."
            )
        self.name = name
        self.operator = operator
        self.image_shape = tuple(image_shape)
        self.register_buffer("y", y)
        self.register_buffer("x_true", x_true)
        self.register_buffer("init", init)
        self.baseline_names = list((baselines or {}).keys())
        for key, value in (baselines or {}).items():
            self.register_buffer(f"baseline_{key}", value)
        self._to_domain, self._from_domain = to_domain, from_domain
        self._to_display = to_display
        self.data_range = data_range
        self._extra_metrics = extra_metrics
        self._metric_conventions = dict(metric_conventions or {})
        self.info = info or {}
        self.execution = None  # a callable x -> data loss set by the fast path (compiled); None: eager
        self._operator_norm: float | None = None
        # Which entries of y may be held out (broadcastable to y; entries broadcast together are held out together)
        # and how the task's init is made from a measurement: the task's business (docs/holdout.md).
        self._holdable = holdable
        self._init_from = init_from
        self.holdout: dict | None = None  # set by ``hold_out``

    # Representations -------------------------------------------------------------------------
    def to_domain(self, x: torch.Tensor) -> torch.Tensor:
        return self._to_domain(x)

    def from_domain(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_domain(x)

    def display(self, x: torch.Tensor) -> torch.Tensor:
        """The real image that metrics and figures see (e.g. magnitude for MRI), clamped to the range."""
        image = self._to_display(x) if self._to_display is not None else x
        return image.clamp(0, self.data_range)

    # Data fit --------------------------------------------------------------------------------
    def forward_model(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator(self.to_domain(x))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_model(x) - self.y

    def mean_squared_misfit(self, x: torch.Tensor) -> torch.Tensor:
        """||A x - y||^2 / m; with held-out entries, ||M (A x - y)||^2 / m_fit (the fitted entries only)."""
        misfit = mean_squared_magnitude(self.residual(x))
        return misfit if self.holdout is None else misfit * self.holdout["fit_scale"]

    def data_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared data misfit ||A x - y||^2 / m, the DIP loss; through ``execution`` where the fast path
        compiled it (``speed.runner``)."""
        return self.mean_squared_misfit(x) if self.execution is None else self.execution(x)

    # Weights (docs/weights.md) ------------------------------------------------------------------
    def operator_norm(self) -> float:
        """||A||₂, by power iteration once per problem (1 for the identity; a non-linear operator counts as 1,
        the Lipschitz bound of the normalised blur-and-clip operators here)."""
        if self._operator_norm is None:
            op = self.operator
            linear = isinstance(op, LinearOperator) and not isinstance(op, Identity)
            self._operator_norm = operator_norm(op, iterations=30) if linear else 1.0
        return self._operator_norm

    def per_pixel_data_scale(self) -> float:
        """c with c · ``data_loss`` = ||A x − y||² / (N ||A||²), the data term per image entry.

        ``data_loss`` is a mean over the m entries of y; N is the number of (real) entries of the image in network
        space. c = m / (N ||A||²) is 1 for denoising and for any operator with ||A||² = m / N (inpainting's mask,
        averaging downsamplers); penalties that are means over the N image entries are then balanced against the
        data term alike on every task when they are weighted by λ / c (docs/weights.md).
        """
        m = self.fit_entries()  # the entries data_loss averages over (a complex entry counts once)
        return m / (math.prod(self.image_shape) * self.operator_norm() ** 2)

    def fit_entries(self) -> int:
        """m: the entries of y the data loss averages over (all but the held-out ones)."""
        m = math.prod(self.y.shape[1:])
        return m if self.holdout is None else m - self.holdout["held_entries"]

    # Held-out measurements (docs/holdout.md) -----------------------------------------------------
    @torch.no_grad()
    def hold_out(self, fraction: float, seed: int = 0, pattern: str = "random") -> None:
        """Hold out a seeded ``fraction`` of the entries the task allows (``pattern=cells``: one pixel of each 2×2
        cell, denoising only): from here on ``operator`` is M∘A, ``y`` is M y and ``init`` is made from M y, so that
        nothing a method builds sees the held-out values; ``held_out_misfit`` measures them."""
        check_holdout_options(fraction, pattern)
        if self.holdout is not None:
            raise UserError("This problem's measurements are already split: hold out once per problem.")
        if pattern == "cells":
            held = self.cell_split(seed)
        else:
            holdable = self.holdable_entries()
            candidates = holdable.reshape(-1).nonzero().squeeze(1)
            count = round(fraction * len(candidates))
            if count < 1:
                raise UserError(
                    f"callbacks.early_stopping.fraction={fraction} holds out no measurement of {len(candidates)} "
                    f"that the {self.name} task can hold out: use a larger fraction."
                )
            generator = torch.Generator().manual_seed(int(seed))
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
            held = torch.zeros(holdable.numel(), dtype=torch.bool)
            held[chosen] = True
            held = held.reshape(holdable.shape)
        held = held.to(self.y.device)
        held_entries = int(held.expand_as(self.y).sum())
        holdable_count = int(self.holdable_entries().expand_as(self.y).sum()) if pattern != "cells" else None
        fit_mask = (~held).to(self.y.real.dtype)
        y = self.y
        self.operator = masked(self.operator, fit_mask)
        self.register_buffer("held_mask", held.to(self.y.real.dtype))
        self.register_buffer("held_y", y * self.held_mask)
        self.y = y * fit_mask
        if self.init is not None:
            if self._init_from is None:
                raise UserError(
                    f"The {self.name} task cannot make its initial reconstruction from part of its measurements: "
                    "use another callbacks choice than es_holdout."
                )
            self.init = self._init_from(self.y).detach().to(self.y.device)
        m = math.prod(y.shape[1:])
        self.holdout = {
            "fraction": held_entries / m if holdable_count is None else held_entries / holdable_count,
            "pattern": pattern,
            "seed": int(seed),
            "held_entries": held_entries,
            "fit_scale": m / (m - held_entries),
        }
        self._operator_norm = None
        self.execution = None

    def holdable_entries(self) -> torch.Tensor:
        """The task's holdable entries (bool, broadcastable to y); by default every entry, with the channels of an
        image-shaped measurement held out together (one pixel is one measurement)."""
        if self._holdable is not None:
            return self._holdable.bool().cpu()
        shape = list(self.y.shape)
        if self.y.ndim >= 4:  # (1, C, H, W): a pixel's channels together
            shape[1] = 1
        return torch.ones(shape, dtype=torch.bool)

    def cell_split(self, seed: int) -> torch.Tensor:
        """One pixel of each 2×2 cell held out, chosen per cell by ``seed``: each held-out pixel is predicted from
        fitted neighbours (the "two noisy copies" of pixel-splitting self-supervision)."""
        spatial = tuple(self.y.shape[2:])
        if not isinstance(self.operator, Identity) or len(spatial) != 2 or tuple(self.y.shape[1:]) != self.image_shape:
            raise UserError(
                f"callbacks.early_stopping.pattern=cells splits the pixels of a noisy image (task=denoising), not the "
                f"{self.name} task's measurements: use callbacks.early_stopping.pattern=random."
            )
        height, width = spatial
        if height < 2 or width < 2:
            raise UserError("callbacks.early_stopping.pattern=cells needs an image of at least 2x2 pixels.")
        generator = torch.Generator().manual_seed(int(seed))
        cells = torch.randint(0, 4, ((height + 1) // 2, (width + 1) // 2), generator=generator)
        choice = cells.repeat_interleave(2, 0).repeat_interleave(2, 1)[:height, :width]
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        position = (rows % 2) * 2 + cols % 2
        return (choice == position)[None, None]

    @torch.no_grad()
    def held_out_misfit(self, x: torch.Tensor) -> torch.Tensor:
        """Mean |A x − y|² over the held-out entries (x in network space)."""
        inner = self.operator.inner
        residual = (inner(self.to_domain(x)) - self.held_y) * self.held_mask
        total = torch.view_as_real(residual).square().sum() if residual.is_complex() else residual.square().sum()
        return total / self.holdout["held_entries"]

    # Evaluation ------------------------------------------------------------------------------
    @property
    def has_ground_truth(self) -> bool:
        return self.x_true is not None

    def baselines(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"baseline_{name}") for name in self.baseline_names}

    def psnr(self, x: torch.Tensor) -> torch.Tensor:
        return psnr(self.display(x), self.display(self.x_true), self.data_range)

    def ssim(self, x: torch.Tensor) -> torch.Tensor:
        return ssim(self.display(x), self.display(self.x_true), self.data_range)

    def extra_metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task-specific metrics beyond PSNR/SSIM (e.g. the true error ||x - x†|| of 1D problems)."""
        return self._extra_metrics(x) if self._extra_metrics is not None else {}

    def metric_conventions(self) -> dict[str, str]:
        """How each reported metric is computed (metrics.json's ``metric_conventions``): PSNR and SSIM here, the
        task's own entries (its display, its ``extra_metrics``) from the constructor's ``metric_conventions``."""
        shown = f"display(x) clamped to [0, data_range], data_range={self.data_range:.6g}"
        return {
            "psnr": f"10·log10(data_range² / MSE) over all pixels and channels of {shown} (torchmetrics); with "
            "data_range 1 this is the DIP notebooks' compare_psnr(x_true, out.clip(0, 1))",
            "ssim": f"Gaussian window 11, σ 1.5, K1 0.01, K2 0.03 (torchmetrics structural_similarity_index_measure) "
            f"on {shown}; NaN below 11 pixels a side",
            "best_*": "metrics of the iterate with the highest psnr, checked every module.eval_every steps (an oracle "
            "choice, as the papers' best iterate)",
            **self._metric_conventions,
        }

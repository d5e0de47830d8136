"""Total variation: the reusable penalty and TV-DIP (Liu et al. 2019; Baguer et al. 2020).

TV-DIP minimises ``data(f_θ(z)) + λ·TV(f_θ(z))``: the network's implicit prior plus an explicit
edge-preserving one, which slows down (but does not remove) the fitting of noise. The penalty works
on batch-first tensors in network space, ``(B, C, H, W)`` images or ``(B, C, n)`` signals, and is a
public function because other methods (DRP, Educated DIP, DeepRED) add it to their losses too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from untrained.errors import check_at_least, check_choice, check_positive
from untrained.methods.base import Method
from untrained.problem import InverseProblem

TV_KINDS = ("anisotropic", "isotropic")
TV_REDUCTIONS = ("sum", "mean")


def finite_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences along each spatial axis (all axes after the channel axis).

    The last difference along each axis is zero (Neumann boundary), so every difference has the shape
    of ``x`` and the isotropic magnitude can combine them pixel by pixel.
    """
    differences = []
    for axis in range(2, x.ndim):
        forward = torch.diff(x, dim=axis)
        pad = [0, 0] * (x.ndim - 1 - axis) + [0, 1]  # F.pad lists the last axis first
        differences.append(F.pad(forward, pad))
    return differences


def total_variation(
    x: torch.Tensor, kind: str = "anisotropic", eps: float = 1e-8, reduction: str = "sum"
) -> torch.Tensor:
    """TV of a batch ``(B, C, *spatial)``, summed over channels and spatial axes (and the batch).

    anisotropic: Σ |D_1 x| + |D_2 x| (the DRP / dival form); isotropic: Σ sqrt(|D_1 x|² + |D_2 x|² + eps),
    where ``eps`` keeps the gradient finite at flat pixels. ``reduction='mean'`` divides by the number of
    entries of ``x``, which makes a weight independent of the image size. Complex inputs use moduli.
    """
    check_choice("TV kind", kind, TV_KINDS)
    check_choice("TV reduction", reduction, TV_REDUCTIONS)
    if x.ndim < 3:
        raise ValueError(f"total_variation expects (B, C, *spatial), got shape {tuple(x.shape)}.")
    differences = finite_differences(x)
    if kind == "anisotropic":
        value = sum(d.abs().sum() for d in differences)
    else:
        squared = sum(d.abs() ** 2 if d.is_complex() else d**2 for d in differences)
        value = torch.sqrt(squared + eps).sum()
    return value / x.numel() if reduction == "mean" else value


class TVDIP(Method):
    """DIP with an explicit total-variation penalty on the output.

    Args:
        tv_weight: λ in ``data + λ·TV``.
        tv_kind: 'anisotropic' or 'isotropic'.
        tv_eps: smoothing of the isotropic norm at zero gradient.
        tv_reduction: 'sum' (dival's ``tv_loss``, with λ = 1e-4 for CT) or 'mean' (per entry).
        **kwargs: the options of :class:`Method` (lr, input, reg_noise_std, exp_weight, ...).
    """

    name = "tv"

    def __init__(
        self,
        tv_weight: float = 1e-2,
        tv_kind: str = "anisotropic",
        tv_eps: float = 1e-8,
        tv_reduction: str = "mean",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_at_least("method.tv_weight", tv_weight, 0)
        check_choice("method.tv_kind", tv_kind, TV_KINDS)
        check_choice("method.tv_reduction", tv_reduction, TV_REDUCTIONS)
        check_positive("method.tv_eps", tv_eps)  # isotropic TV's gradient is 0/0 at flat pixels without it
        self.tv_weight, self.tv_kind, self.tv_eps, self.tv_reduction = tv_weight, tv_kind, tv_eps, tv_reduction

    def regularizer(self, output: torch.Tensor, problem: InverseProblem, step: int) -> dict[str, torch.Tensor]:
        return {"tv": self.tv_weight * total_variation(output, self.tv_kind, self.tv_eps, self.tv_reduction)}

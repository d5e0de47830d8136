"""Total variation, the penalty that methods (TV-DIP, DRP, Educated DIP), networks (the unrolled
proximal gradient of ADP) and classical baselines all add: batch-first tensors in network space,
``(B, C, H, W)`` images or ``(B, C, n)`` signals."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from untrained.errors import check_choice

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

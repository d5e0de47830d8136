"""Sampling masks: k-space column masks of Cartesian MRI (fastMRI's mask functions and a variable-density
one) and the observed-pixel masks of inpainting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from untrained.errors import UserError, check_array, check_choice, check_in_range, check_integer, read_npy

FASTMRI_MASKS = ("random", "equispaced", "equispaced_fraction")
COLUMN_MASKS = (*FASTMRI_MASKS, "variable_density")
MAX_DENSITY_POWER = 20.0  # (1 - |k|/k_max)^p stays above float64's smallest number at the edge (1e-6^20)
INPAINTING_MASKS = ("pixels", "boxes", "center", "text", "file")


# MRI: k-space columns ---------------------------------------------------------------------------------
def column_mask(
    kind: str, num_cols: int, acceleration: int, center_fraction: float, seed: int, density_power: float = 2.0
) -> torch.Tensor:
    """A 0/1 mask of the k-space columns (phase encodes); the same seed gives the same mask."""
    if kind not in COLUMN_MASKS:
        raise UserError(f"Unknown task.mask '{kind}': choose one of {', '.join(COLUMN_MASKS)}.")
    if kind in FASTMRI_MASKS:  # fastMRI's mask functions take whole accelerations
        check_integer(f"task.acceleration (at most the {num_cols} k-space columns)", acceleration, 1, num_cols)
    check_in_range(f"task.acceleration (at most the {num_cols} k-space columns)", acceleration, 1, num_cols)
    check_in_range("task.center_fraction", center_fraction, 0, 1, low_open=True)
    check_in_range("task.density_power", density_power, 0, MAX_DENSITY_POWER)
    if kind == "variable_density":
        return variable_density_mask(num_cols, acceleration, center_fraction, seed, density_power)
    from fastmri.data.subsample import create_mask_for_mask_type

    mask_func = create_mask_for_mask_type(kind, [center_fraction], [int(acceleration)])
    mask, _ = mask_func((1, num_cols, 1), seed=seed)
    return mask.reshape(num_cols).float()


def centre_columns(num_cols: int, center_fraction: float) -> torch.Tensor:
    """The fully sampled centre alone, placed as fastMRI's ``calculate_center_mask`` places it."""
    mask = torch.zeros(num_cols)
    num_low = round(num_cols * center_fraction)
    start = (num_cols - num_low + 1) // 2
    mask[start : start + num_low] = 1
    return mask


def variable_density_mask(
    num_cols: int, acceleration: float, center_fraction: float, seed: int, power: float
) -> torch.Tensor:
    """fastMRI's fully sampled centre plus columns drawn without replacement with density (1 - |k|/k_max)^power.

    The polynomial density is Lustig, Donoho & Pauly 2007 (Sparse MRI, genPDF); the number of columns is
    exactly round(num_cols / acceleration).
    """
    mask = centre_columns(num_cols, center_fraction).numpy()
    num_low = int(mask.sum())
    outer = np.flatnonzero(mask == 0)
    wanted = min(max(round(num_cols / acceleration) - num_low, 0), outer.size)
    if wanted:
        distance = np.abs(outer - num_cols / 2) / (num_cols / 2)
        density = np.clip(1 - distance, 1e-6, None) ** power
        chosen = np.random.default_rng(seed).choice(outer, size=wanted, replace=False, p=density / density.sum())
        mask[chosen] = 1
    return torch.from_numpy(mask)


# Inpainting: observed pixels --------------------------------------------------------------------------
def make_mask(
    kind: str,
    shape: tuple[int, int],
    seed: int = 0,
    keep_ratio: float = 0.5,
    hole_ratio: float = 0.25,
    path: str | None = None,
) -> torch.Tensor:
    """A (1, H, W) mask, 1 = observed. ``hole_ratio`` is the target fraction of missing pixels."""
    h, w = shape
    rng = np.random.default_rng(seed)
    check_choice("task.mask", kind, INPAINTING_MASKS)
    check_in_range("task.keep_ratio", keep_ratio, 0, 1, low_open=True)
    check_in_range("task.hole_ratio", hole_ratio, 0, 1, high_open=True)
    mask = np.ones((h, w), dtype=np.float32)
    if kind == "pixels":
        mask = (rng.random((h, w)) < keep_ratio).astype(np.float32)
    elif kind == "boxes":
        while 1 - mask.mean() < hole_ratio:
            bh, bw = rng.integers(max(h // 16, 1), max(h // 6, 2)), rng.integers(max(w // 16, 1), max(w // 6, 2))
            top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            mask[top : top + bh, left : left + bw] = 0
    elif kind == "center":
        bh, bw = round(h * hole_ratio**0.5), round(w * hole_ratio**0.5)
        mask[(h - bh) // 2 : (h - bh) // 2 + bh, (w - bw) // 2 : (w - bw) // 2 + bw] = 0
    elif kind == "text":
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (w, h), 255)
        draw = ImageDraw.Draw(canvas)
        step = max(h // 8, 8)
        for row, top in enumerate(range(2, h - 4, step)):
            draw.text((2 + (row % 2) * 7, top), "untrained deep image prior " * 4, fill=0)
        mask = (np.asarray(canvas) > 127).astype(np.float32)
    else:
        file = Path(path or "").expanduser()
        if not file.is_file():
            raise UserError(f"Mask file '{path}' does not exist: give a .png or .npy mask (1 = observed).")
        if file.suffix == ".npy":
            array = check_array(f"Mask file '{path}'", read_npy(file, "mask file"), (2,), kinds="biuf")
            if not np.isin(array, (0, 1)).all():  # e.g. an image saved by mistake: thresholding it would hide that
                raise UserError(
                    f"Mask file '{path}' holds values other than 0 and 1: save a binary mask (1 = observed)."
                )
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                array = np.asarray(Image.open(file).convert("L")) / 255.0  # grey edges: thresholded at half grey
            except (UnidentifiedImageError, OSError) as error:
                raise UserError(f"Cannot read mask image '{path}' ({error}): give a .png or .npy mask.") from None
        if array.shape != (h, w):
            raise UserError(
                f"The mask file '{path}' is {array.shape[0]}x{array.shape[1]} but the image is {h}x{w}: "
                f"resize the mask."
            )
        mask = (array > 0.5).astype(np.float32)
    if not mask.any():
        fix = "give a mask with ones where the image is observed" if kind == "file" else "raise task.keep_ratio"
        raise UserError(f"The inpainting mask (task.mask={kind}) observes no pixel: {fix}.")
    return torch.from_numpy(mask)[None]

"""Inpainting: y = m ⊙ x (+ noise) with random pixels, random holes, a centred box, text, or a mask file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic

from untrained.errors import UserError, check_array, check_choice, check_in_range, read_npy
from untrained.operators.inpainting import Mask
from untrained.problem import InverseProblem
from untrained.tasks.images import load_image
from untrained.tasks.noise import apply_noise

MASKS = ("pixels", "boxes", "center", "text", "file")


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
    check_choice("task.mask", kind, MASKS)
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


def biharmonic(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    image = y[0].permute(1, 2, 0).numpy()
    filled = inpaint_biharmonic(image, mask[0].numpy() == 0, channel_axis=-1)
    return torch.from_numpy(np.ascontiguousarray(filled, dtype=np.float32)).permute(2, 0, 1)[None]


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
) -> InverseProblem:
    x_true = load_image(image, size, grayscale, index)
    shape = tuple(x_true.shape[1:])
    observed = make_mask(mask, shape[1:], mask_seed, keep_ratio, hole_ratio, mask_path)
    operator = Mask(observed, shape)
    with torch.no_grad():
        y = operator(apply_noise(x_true, noise, noise_level, noise_seed))
    return InverseProblem(
        name="inpainting",
        operator=operator,
        y=y,
        image_shape=shape,
        x_true=x_true,
        init=y,
        baselines={"masked": y, "biharmonic": biharmonic(y, observed)},
        info={"image": image, "mask": mask, "missing_fraction": float(1 - observed.mean())},
    )

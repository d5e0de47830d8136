"""Image sources: scikit-image's built-in images, a file, or one file of a folder; measured images
(``task.measurement``: a noisy, damaged, blurred or low-resolution image without a ground truth)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata
from skimage.color import rgb2gray
from skimage.transform import resize

from untrained.errors import UserError, check_array, check_integer, read_npy

BUILTIN_IMAGES = (
    "astronaut",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "immunohistochemistry",
    "retina",
    "shepp_logan_phantom",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
MAX_IMAGE_SIZE = 8192  # pixels per side: one 128-channel fp32 activation map of 8192² already takes 32 GiB


def list_folder(folder: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    if not files:
        raise UserError(f"Folder '{folder}' holds no files with suffix {sorted(suffixes)}: point task.image at images.")
    return files


def resolve_path(source: str | Path, index: int = 0, suffixes=IMAGE_SUFFIXES) -> Path:
    """A file path, or the index-th file (sorted by name) of a folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"Image '{source}' does not exist: give an existing file or folder, or a built-in image "
            f"({', '.join(BUILTIN_IMAGES)})."
        )
    if path.is_dir():
        files = list_folder(path, suffixes)
        if not 0 <= index < len(files):
            raise UserError(
                f"task.index={index} is out of range: folder '{path}' holds {len(files)} images (0..{len(files) - 1})."
            )
        path = files[index]
    return path


def read_image_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB", "I;16", "I", "F") else im
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"Cannot read image '{path}' ({error}): give a PNG, JPEG, TIFF or BMP file.") from None
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = check_array(f"Image '{path}'", array, (2, 3)).astype(np.float32)  # 16-bit and float TIFFs
    return (array - array.min()) / max(float(array.max() - array.min()), 1e-12)


def load_builtin(name: str) -> np.ndarray:
    array = np.asarray(getattr(skdata, name)())
    array = array[..., :3] if array.ndim == 3 else array  # drop alpha
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)


def image_size(size, maximum: int = MAX_IMAGE_SIZE) -> tuple[int, int]:
    """``task.size`` as (H, W): a whole number (square) or [H, W], each side in [1, maximum]."""
    sides = list(size) if isinstance(size, Sequence) and not isinstance(size, str) else [size, size]
    if len(sides) != 2:
        raise UserError(f"task.size must be a whole number or [H, W], got {size}.")
    for side in sides:
        check_integer("task.size", side, 1, maximum)
    return sides[0], sides[1]


def fit_size(image: np.ndarray, size) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (anti-aliased). ``size``: int (square) or [H, W]."""
    if size is None:
        return image
    height, width = image_size(size)
    h, w = image.shape[:2]
    scale = min(h / height, w / width)
    crop_h, crop_w = round(height * scale), round(width * scale)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    image = image[top : top + crop_h, left : left + crop_w]
    if image.shape[:2] != (height, width):
        image = resize(image, (height, width, *image.shape[2:]), anti_aliasing=scale > 1, preserve_range=True)
    return image.astype(np.float32)


def load_image(source: str = "astronaut", size=256, grayscale: bool | None = None, index: int = 0) -> torch.Tensor:
    """Load an image as a (1, C, H, W) float tensor in [0, 1]."""
    check_integer("task.index", index, 0)
    if size is not None:
        image_size(size)  # before reading: a wrong size stops at once
    if source in BUILTIN_IMAGES:
        image = load_builtin(source)
    elif isinstance(source, str) and "/" not in source and "." not in source and not Path(source).exists():
        raise UserError(
            f"Unknown built-in image '{source}': choose one of {', '.join(BUILTIN_IMAGES)}, or give a file path."
        )
    else:
        image = read_image_file(resolve_path(source, index))
    if grayscale and image.ndim == 3:
        image = rgb2gray(image).astype(np.float32)
    elif grayscale is False and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = fit_size(np.clip(image, 0.0, 1.0), size)
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor[None].float()


def load_measurement(path, grayscale: bool | None = None) -> torch.Tensor:
    """A measured image (``task.measurement``) as (1, C, H, W) float, at the file's own size (resizing would change
    its noise, blur and sampling): an image file (8-bit: [0, 1]; 16-bit and float: min-max scaled to [0, 1]) or a
    .npy array (H, W) or (H, W, C), C = 1 or 3, taken as it is."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise UserError(
            f"task.measurement='{path}' does not exist: give the measured image's file (PNG, JPEG, TIFF, BMP or .npy)."
        )
    if file.suffix.lower() == ".npy":
        array = check_array(f"task.measurement '{file}'", read_npy(file, "measurement"), (2, 3)).astype(np.float32)
        if array.ndim == 3 and array.shape[-1] not in (1, 3):
            raise UserError(
                f"task.measurement '{file}' has shape {array.shape}: expected (H, W) or (H, W, C) with 1 or 3 channels."
            )
    elif file.suffix.lower() in IMAGE_SUFFIXES:
        array = read_image_file(file)
    else:
        raise UserError(
            f"task.measurement='{path}' has suffix '{file.suffix}': give a PNG, JPEG, TIFF, BMP or .npy file."
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if grayscale and array.ndim == 3:
        array = rgb2gray(np.clip(array, 0, 1)).astype(np.float32)
    elif grayscale is False and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    for side in array.shape[:2]:
        check_integer("task.measurement's size", side, 1, MAX_IMAGE_SIZE)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor[None]

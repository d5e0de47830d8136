"""Sparse-view parallel-beam CT (Baguer et al. 2020, "Computed tomography reconstruction using deep
image prior and learned reconstruction methods"; the seed papers' 256², 18-view setting).

Images are attenuation normalised to [0, 1] by μ_max (LoDoPaB's convention: μ_water = 20 m⁻¹,
μ_max = 81.35858 m⁻¹, i.e. 3071 HU). Measurements are post-log line integrals with optional Poisson
photon noise (I₀ photons per ray) and Gaussian noise, on a 26 cm field of view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize

from untrained.baselines.iterative import cgls, sirt
from untrained.baselines.tv import tv_pdhg
from untrained.errors import (
    UserError,
    check_array,
    check_in_range,
    check_integer,
    read_npy,
)
from untrained.operators.ct import ray_transform
from untrained.operators.generators.phantoms import MU_AIR, MU_MAX, MU_WATER, random_ellipses, simulate_sinogram
from untrained.problem import InverseProblem
from untrained.tasks.images import fit_size, load_image, resolve_path

MAX_SIZE = 4096  # pixels per side (clinical CT slices are 512²)


def hounsfield_to_normalised(hu: np.ndarray) -> np.ndarray:
    mu = MU_WATER + hu / 1000.0 * (MU_WATER - MU_AIR)
    return np.clip(mu / MU_MAX, 0.0, 1.0).astype(np.float32)


def read_dicom_slice(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0)
        )
    except (InvalidDicomError, AttributeError) as error:
        raise UserError(f"Cannot read DICOM image '{path}' ({error}): give a CT DICOM file with pixel data.") from None
    return hounsfield_to_normalised(hu)


def dicom_series(folder: Path) -> list[Path]:
    """The slices of an AAPM-style folder (one DICOM per slice), ordered by position in the volume."""
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".dcm", ".ima", ""))
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not a DICOM file: skip, as DICOM folders often hold other files
            continue
        position = getattr(ds, "ImagePositionPatient", None)
        slices.append((float(position[2]) if position else float(getattr(ds, "InstanceNumber", 0)), path))
    if not slices:
        raise UserError(f"DICOM folder '{folder}' holds no readable DICOM images: point task.image at a CT series.")
    return [path for _, path in sorted(slices)]


def square_size(size) -> int | None:
    """``task.size`` of a CT task: n or [n, n] (the ray transform reconstructs square images), or null."""
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 8):
        raise UserError(f"task.size must be an integer >= 8 for CT (or [n, n]: the images are square), got {size}.")
    return size


def dicom_source(image: str, index: int) -> str | None:
    """The DICOM file the ground-truth slice came from (a .dcm/.ima file or slice ``index`` of a DICOM folder), whose
    header the reconstruction's DICOM export copies; None for other images."""
    path = Path(image).expanduser()
    if path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
        series = dicom_series(path)
        return str(series[index]) if 0 <= index < len(series) else None
    if path.suffix.lower() in (".dcm", ".ima"):
        return str(resolve_path(path))
    return None


def load_ct_image(image: str, size: int | None, index: int, seed: int) -> np.ndarray:
    """The ground-truth slice in [0, 1]: a phantom name, an .npy/.dcm/image file, or a DICOM folder;
    ``size=None`` keeps a file's (square) size."""
    if image == "shepp_logan":
        return load_image("shepp_logan_phantom", size, grayscale=True)[0, 0].numpy()
    if image == "ellipses":
        if size is None:
            raise UserError("task.image=ellipses is drawn at task.size: set task.size (e.g. 256), not null.")
        return random_ellipses(size, seed)
    path = Path(image).expanduser()
    if path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
        series = dicom_series(path)
        if not 0 <= index < len(series):
            raise UserError(f"task.index={index} is past the end of the DICOM series '{path}' ({len(series)} slices).")
        array = read_dicom_slice(series[index])
    elif path.suffix.lower() in (".dcm", ".ima"):
        array = read_dicom_slice(resolve_path(path))
    elif path.suffix.lower() == ".npy":
        array = read_npy(resolve_path(path), "CT image")
        if array.ndim == 3:  # a stack of slices
            if not 0 <= index < array.shape[0]:
                raise UserError(f"task.index={index} is past the end of '{path}' ({array.shape[0]} slices).")
            array = array[index]
    else:
        return load_image(image, size, grayscale=True, index=index)[0, 0].numpy()
    array = check_array(f"The CT image '{path}'", array, (2,)).astype(np.float32)
    if size is None:
        return array
    array = fit_size(array, size)
    return resize(array, (size, size), preserve_range=True).astype(np.float32) if array.shape != (size, size) else array


def ct(
    image: str = "shepp_logan",
    index: int = 0,
    size: int | list[int] | None = 256,
    views: int = 18,
    view_selection: str = "equispaced",
    photons: float | None = None,
    gaussian_std: float = 0.0,
    impl: str | None = None,
    fbp_filter: str = "Hann",
    fbp_frequency_scaling: float = 0.85,
    tv_weight: float = 3e-4,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    sirt_iterations: int = 400,
    cgls_iterations: int = 50,
    noise_seed: int = 0,
    phantom_seed: int = 0,
) -> InverseProblem:
    size = square_size(size)
    if size is not None:
        check_integer("task.size", size, 8, MAX_SIZE)
    check_integer("task.index", index, 0)
    check_in_range("task.fbp_frequency_scaling", fbp_frequency_scaling, 0, 1, low_open=True)
    x_true = torch.from_numpy(load_ct_image(image, size, index, phantom_seed))[None, None]
    if size is None:  # the file's own size
        height, width = x_true.shape[-2:]
        if height != width:
            raise UserError(
                f"The CT image is {height}x{width}, but CT reconstructs square images: set task.size=n "
                "to centre-crop and resize it."
            )
        size = square_size(int(height))
    operator = ray_transform(size, views, view_selection, seed=noise_seed, impl=impl)
    y = simulate_sinogram(operator, x_true, photons, gaussian_std, noise_seed)
    fbp = operator.fbp(y, fbp_filter, fbp_frequency_scaling)
    init = fbp.clamp(0, 1)
    # The normalised operator has ‖A‖ = 1; images are attenuation in [0, 1].
    tv = tv_pdhg(operator, y, tv_weight, init, (0.0, 1.0), tv_max_iterations, tv_tolerance, operator_norm_value=1.0)
    cgls_estimate, cgls_done = cgls(operator, y, cgls_iterations)
    baselines = {"fbp": fbp, "tv": tv.image, "sirt": sirt(operator, y, sirt_iterations), "cgls": cgls_estimate}
    return InverseProblem(
        name="ct",
        operator=operator,
        y=y,
        image_shape=(1, size, size),
        x_true=x_true,
        init=init,
        init_from=lambda sinogram: operator.fbp(sinogram, fbp_filter, fbp_frequency_scaling).clamp(0, 1),
        baselines=baselines,
        info={
            "image": image,
            "views": views,
            "angles": operator.angle_indices.tolist(),
            "photons": photons,
            "operator_norm": operator.norm,
            "impl": operator.impl,
            "baseline_iterations": {"tv": tv.iterations, "sirt": sirt_iterations, "cgls": cgls_done},
            "baseline_converged": {"tv": tv.converged},
            # The outputs in physical units (outputs.write_attenuation_outputs): attenuation = image × μ_max, and
            # Hounsfield units from μ_water and μ_air; a DICOM input also gets a DICOM of the reconstruction.
            "scale": MU_MAX,
            "units": "1/m",
            "mu_water": MU_WATER,
            "mu_air": MU_AIR,
            "dicom_source": dicom_source(image, index) if isinstance(image, str) else None,
        },
    )

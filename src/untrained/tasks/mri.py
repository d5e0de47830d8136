"""Multi-coil Cartesian MRI from undersampled k-space: fastMRI HDF5 slices, measured k-space files or a built-in
simulation.

Network space is 2 real channels (real, imaginary) of the complex image; metrics and figures see the
magnitude inside the coil-map support, with ``data_range`` = the ground truth's maximum (fastMRI's
PSNR/SSIM: magnitude, max-normalised). The ground truth of a file is the root-sum-of-squares of its
fully sampled coil images, cropped (fastMRI's ``reconstruction_rss``); the simulation's is the RSS of
its noiseless coil images (= the magnitude of its image). Only magnitudes are compared: ESPIRiT maps fix
the image phase only up to a smooth per-pixel phase.

Retrospective undersampling, as in the untrained-network MRI papers: the fully sampled coil images are
centre-cropped (fastMRI's 320×320; ``size: null`` keeps the raw 640×368) and transformed back to
k-space, which is then masked column-wise with fastMRI's mask functions. Coil maps come from ESPIRiT on
the fully sampled centre (of the raw, acquired FOV for files; maps then cropped), or from the file / the
simulation with ``maps: given``.
The measurement is scaled so that the zero-filled reconstruction has maximum magnitude 1
(``info['scale']``); the scale never looks at fully sampled data.

Measured k-space (no ground truth): fastMRI files holding only undersampled data (a ``mask`` dataset, as the
challenge and test sets), BART .cfl/.hdr pairs and .npy/.npz arrays (``tasks/kspace_files.py``) are reconstructed
with their own mask (a ``task.mask_path`` file, an .npz's ``mask``, or else the columns holding data), at their own
size except for an optional readout crop (``task.size``'s height: exact, since every column is fully sampled along
the readout), with coil maps from ESPIRiT on their fully sampled centre (its width read from the mask) or from a
file (``task.maps=<file>``).
"""

from __future__ import annotations

import functools
import logging
import numbers
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import torch

from untrained.baselines import MAX_BASELINE_STEPS
from untrained.baselines.linear import cg_sense
from untrained.baselines.sparse import l1_wavelet_sense
from untrained.baselines.tv import tv_pdhg
from untrained.errors import UserError, check_array, check_at_least, check_choice, check_integer, check_number
from untrained.metrics import nmse, ssim_fastmri
from untrained.operators.generators.coils import (
    acs_columns,
    birdcage_maps,
    espirit_options,
    estimate_maps,
    smooth_phase,
)
from untrained.operators.generators.masks import centre_columns, column_mask
from untrained.operators.mri import MultiCoilMRI, fft2c, ifft2c, rss
from untrained.operators.noise import add_gaussian
from untrained.operators.wavelet import LOW_PASS, MAX_LEVELS
from untrained.problem import InverseProblem
from untrained.tasks import kspace_files
from untrained.tasks.images import image_size, load_image

log = logging.getLogger(__name__)

MAX_COILS = 128  # receive coils (fastMRI's knee files: 15)
ISMRMRD_NAMESPACE = "{http://www.ismrm.org/ISMRMRD}"


# Representations --------------------------------------------------------------------------------------
def to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) real/imaginary channels → complex64 (B, H, W) (also from bf16/fp16 autocast outputs)."""
    return torch.complex(x[:, 0].float(), x[:, 1].float())


def to_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex (B, H, W) → (B, 2, H, W) real/imaginary channels."""
    return torch.stack((z.real, z.imag), dim=1).float()


def support_magnitude(x: torch.Tensor, operator: MultiCoilMRI) -> torch.Tensor:
    """|x| (B, 1, H, W) where the coil maps are non-zero; ESPIRiT's cropped background is outside the model."""
    # hypot of the two channels: torch's CPU vector_norm over dim 1 is far slower, and this is paid at every
    # PSNR evaluation (see docs/performance.md, "Operators").
    return torch.hypot(x[:, :1], x[:, 1:]) * operator.support


# Simulation -------------------------------------------------------------------------------------------
def simulate_coil_images(image: str, size, coils: int, phase: float, index: int = 0):
    """The complex image (H, W) x = m·e^{iφ} of a built-in or file image m, and its true coil maps."""
    check_integer("task.coils", coils, 1, MAX_COILS)
    check_number("task.phase", phase)
    magnitude = load_image(image, size, grayscale=True, index=index)[0, 0]
    shape = tuple(magnitude.shape)
    x = torch.polar(magnitude, smooth_phase(shape, phase))
    return x, birdcage_maps(coils, shape)


# fastMRI files ----------------------------------------------------------------------------------------
def read_header(raw: bytes | str | None) -> dict:
    """Encoded and reconstruction matrix sizes from an ISMRMRD XML header (empty if missing or unreadable)."""
    if raw is None:
        return {}
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError:
        return {}
    sizes = {}
    for space in ("encodedSpace", "reconSpace"):
        node = root.find(f"{ISMRMRD_NAMESPACE}encoding/{ISMRMRD_NAMESPACE}{space}/{ISMRMRD_NAMESPACE}matrixSize")
        if node is not None:
            sizes[space] = [int(node.findtext(f"{ISMRMRD_NAMESPACE}{axis}", "0")) for axis in ("x", "y")]
    return sizes


def load_fastmri_slice(path: str | Path, slice_index: int | None):
    """One slice's k-space (C, H, W), optional given maps (C, H, W), the file's own sampling mask (H, W) if it holds
    only undersampled data (a ``mask`` dataset), and metadata."""
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"fastMRI file '{path}' does not exist: give task.file=<path to a .h5 file> or task.file=null.")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise UserError(f"Cannot read '{path}' as HDF5 ({error}): give a fastMRI .h5 file.") from None
    with handle:
        if "kspace" not in handle:
            raise UserError(
                f"'{path}' has no 'kspace' dataset (it has {sorted(handle.keys())}): give a fastMRI multi-coil or "
                "single-coil file."
            )
        kspace = handle["kspace"]
        if kspace.ndim not in (3, 4):
            raise UserError(f"'{path}': kspace has shape {kspace.shape}; expected slices×coils×H×W or slices×H×W.")
        slices = kspace.shape[0]
        if slices == 0:
            raise UserError(f"'{path}': kspace holds no slices (shape {kspace.shape}): give a file with data.")
        index = slices // 2 if slice_index is None else slice_index
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < slices:
            raise UserError(
                f"task.slice={slice_index} is out of range: '{path.name}' has {slices} slices (0..{slices - 1})."
            )
        # Checked before anything is computed from them: NaN k-space would stop ESPIRiT's SVD with a traceback.
        data = check_array(f"'{path}' kspace (slice {index})", kspace[index], (2, 3), kinds="iufc")
        data = torch.from_numpy(data[None] if data.ndim == 2 else data).to(torch.complex64)  # single-coil: one coil
        maps = None
        if "sens_maps" in handle:
            maps = check_array(f"'{path}' sens_maps (slice {index})", handle["sens_maps"][index], (3,), kinds="iufc")
            if maps.shape != tuple(data.shape):
                raise UserError(
                    f"'{path}': sens_maps of slice {index} have shape {maps.shape} but its k-space is "
                    f"{tuple(data.shape)}: give coil maps of the k-space's shape (or task.maps=espirit)."
                )
            maps = torch.from_numpy(maps).to(torch.complex64)
        file_mask = None
        if "mask" in handle:  # challenge / test files: undersampled k-space, zeros in the unsampled columns
            file_mask = kspace_files.mask_layout(
                handle["mask"][()], tuple(data.shape[-2:]), None, f"'{path}' mask", "task.file"
            )
        header = handle["ismrmrd_header"][()] if "ismrmrd_header" in handle else None
        info = {
            "file": str(path),
            "slice": index,
            "slices": slices,
            "kspace_shape": list(data.shape),
            "acquisition": str(handle.attrs.get("acquisition", "")),
            **read_header(header),
        }
    return data, maps, file_mask, info


def crop_shape(size, image_shape: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return image_shape
    height, width = image_size(size)
    if not (height <= image_shape[0] and width <= image_shape[1]):
        raise UserError(
            f"task.size={size} does not fit the {image_shape[0]}x{image_shape[1]} image: "
            f"use a crop within it, or task.size=null for the raw size."
        )
    return height, width


def center_crop(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """fastMRI's center_crop over the last two axes."""
    top, left = (images.shape[-2] - shape[0]) // 2, (images.shape[-1] - shape[1]) // 2
    return images[..., top : top + shape[0], left : left + shape[1]]


# Task -------------------------------------------------------------------------------------------------
MAPS_CHOICES = ("espirit", "given")


def mri(
    file: str | None = None,
    slice: int | None = None,
    image: str = "shepp_logan_phantom",
    index: int = 0,
    size=320,
    coils: int = 15,
    phase: float = 1.0,
    noise: float = 0.01,
    noise_seed: int = 0,
    mask: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    density_power: float = 2.0,
    mask_seed: int = 0,
    mask_path: str | None = None,
    axes=("coil", "readout", "phase"),
    maps: str = "espirit",
    espirit: dict | None = None,
    cg_iterations: int = 12,
    l1_weight: float = 5e-4,
    l1_iterations: int = 200,
    l1_tolerance: float = 1e-4,
    wavelet: str = "db4",
    wavelet_levels: int = 4,
    tv_weight: float = 0.1,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
) -> InverseProblem:
    """Undersampled multi-coil k-space of a fastMRI slice or a k-space file (``file``), or of a simulated acquisition.

    Args:
        file, slice: a fastMRI .h5 file and slice index (null: the middle slice), or a measured k-space file (.cfl/.hdr,
            .npy, .npz: one slice); ``file=null`` simulates. A fully sampled fastMRI file is undersampled with the
            mask options and has a ground truth; an undersampled one (a ``mask`` dataset) and a k-space file are
            measured data: their own mask, no ground truth.
        image, index: the simulation's magnitude image (built-in name, file or folder + index).
        size: crop (files) or image size (simulation); int, [H, W] or null (raw). Measured k-space: only the readout
            is cropped (to the height), the phase-encoding axis keeps its size.
        coils, phase, noise: simulation only: coil count, smooth phase amplitude (rad), and the std of
            complex Gaussian k-space noise as a fraction of the image's peak magnitude (orthonormal FFT:
            the same std per pixel in each coil image).
        mask, acceleration, center_fraction, density_power, mask_seed: the column mask (retrospective undersampling).
        mask_path: measured k-space's sampling mask (.npy/.npz/.cfl; (W,) column flags or (H, W)); null: the file's
            own (fastMRI's ``mask``, an .npz's ``mask``) or the columns holding data.
        axes: the order of a .npy/.npz k-space's (and maps file's) axes: coil, readout (kx), phase (ky).
        maps: 'espirit' (from the fully sampled centre), 'given' (the file's ``sens_maps``, or the
            simulation's true maps), or a maps file (.npy/.npz/.cfl, the k-space's shape).
        espirit: ESPIRiT options (calib_width, kernel_size, threshold, crop).
        cg_iterations: iterations of the CG-SENSE baseline.
        l1_weight, l1_iterations, l1_tolerance, wavelet, wavelet_levels: the L1-wavelet SENSE baseline
            (``baselines.sparse.l1_wavelet_sense``): λ of ½‖A x − y‖² + λ‖Ψ x‖₁ (y scaled as below), FISTA's
            maximum iterations and relative-change tolerance, and the periodic DWT Ψ.
        tv_weight, tv_max_iterations, tv_tolerance: the TV-SENSE baseline (:func:`untrained.baselines.tv.tv_pdhg`
            on the complex image, data scaled as ``y``).
    """
    if not isinstance(maps, str) or not maps:
        raise UserError(f"task.maps must be 'espirit', 'given' or a coil maps file, got {maps!r}.")
    check_at_least("task.noise", noise, 0)
    check_integer("task.cg_iterations", cg_iterations, 1, MAX_BASELINE_STEPS)
    check_at_least("task.l1_weight", l1_weight, 0)
    check_integer("task.l1_iterations", l1_iterations, 1, MAX_BASELINE_STEPS)
    check_at_least("task.l1_tolerance", l1_tolerance, 0)
    check_choice("task.wavelet", wavelet, tuple(LOW_PASS))
    check_integer("task.wavelet_levels", wavelet_levels, 1, MAX_LEVELS)
    kspace_files.parse_axes(axes)
    espirit = espirit_options(espirit or {})
    if file is None:
        acquisition = simulate_acquisition(image, size, coils, phase, noise, noise_seed, index)
    else:
        acquisition = read_acquisition(file, slice, size, center_fraction, axes, mask_path)
    info = acquisition.info
    if acquisition.mask is None:  # retrospective: undersample the fully sampled k-space
        columns, full_mask, measured = undersample(
            acquisition.kspace, mask, acceleration, center_fraction, mask_seed, density_power
        )
        info.update(mask=mask, acceleration=acceleration, center_fraction=center_fraction, sampling="retrospective")
    else:  # measured: the acquisition's own mask
        full_mask = acquisition.mask
        measured = acquisition.kspace * full_mask
        columns = kspace_files.calibration_columns(full_mask)
        start, stop = acs_columns(columns)
        info.update(
            sampling="measured",
            acceleration=float(full_mask.numel() / full_mask.sum()),
            center_fraction=(stop - start) / full_mask.shape[-1],
        )
    operator = MultiCoilMRI(coil_maps(maps, acquisition, measured, columns, espirit, file, axes), full_mask)
    y, zero_filled, scale = scale_measurement(operator, measured)
    info.update(
        scale=scale,
        sampled_fraction=float(full_mask.mean()),
        maps=maps,
        shape=list(measured.shape[-2:]),
        ground_truth=acquisition.truth is not None,
    )
    l1_options = dict(
        weight=l1_weight, max_iterations=l1_iterations, tolerance=l1_tolerance, wavelet=wavelet, levels=wavelet_levels
    )
    tv = tv_pdhg(operator, y, tv_weight, zero_filled, None, tv_max_iterations, tv_tolerance)
    info.update(baseline_iterations={"tv_sense": tv.iterations}, baseline_converged={"tv_sense": tv.converged})
    return mri_problem(
        operator, y, zero_filled, acquisition.truth, scale, cg_iterations, info, l1_options, {"tv_sense": tv.image}
    )


@dataclass
class Acquisition:
    """One multi-coil slice before the task undersamples it (fully sampled), or as measured (``mask`` set)."""

    kspace: torch.Tensor  # (C, H, W) complex, at the task's size
    truth: torch.Tensor | None  # (H, W) complex; only its magnitude is compared; None: no ground truth
    given_maps: torch.Tensor | None  # the file's or the simulation's coil maps, if any
    # ESPIRiT's calibration data, (k-space, its fully sampled columns); None: the measured k-space's own centre.
    calibration: tuple[torch.Tensor, torch.Tensor] | None
    info: dict
    mask: torch.Tensor | None = None  # (H, W): measured data's own sampling mask; None: undersample retrospectively
    raw_shape: tuple[int, ...] = ()  # the file's (C, H, W) before any crop (what a maps file must match)


def simulate_acquisition(image: str, size, coils: int, phase: float, noise: float, noise_seed: int, index: int):
    """Coil images of a built-in or file image under birdcage maps, with complex Gaussian k-space noise."""
    x, true_maps = simulate_coil_images(image, size, coils, phase, index)
    coil_images = true_maps * x
    kspace = add_gaussian(fft2c(coil_images), noise, noise_seed) if noise > 0 else fft2c(coil_images)
    truth = rss(coil_images).to(torch.complex64)  # = |x|, as Σ_c |S_c|² = 1
    info = {"source": "simulation", "image": str(image), "coils": coils, "noise": noise, "phase": phase}
    return Acquisition(kspace, truth, true_maps, None, info, raw_shape=tuple(kspace.shape))


def read_acquisition(
    file: str, slice_index: int | None, size, center_fraction: float, axes=("coil", "readout", "phase"), mask_path=None
) -> Acquisition:
    """A fully sampled fastMRI slice's coil images, centre-cropped to ``size`` (its RSS is the ground truth), or
    measured k-space (an undersampled fastMRI slice, a .cfl/.npy/.npz file) with its mask."""
    path = Path(str(file)).expanduser()
    if path.suffix == ".h5" and path.is_file() and kspace_files.is_ismrmrd(path):
        raw, file_mask, info = kspace_files.load_ismrmrd(path, slice_index)
        if mask_path is not None:
            file_mask = kspace_files.load_mask(mask_path, tuple(raw.shape[-2:]), axes)
        info["mask"] = str(mask_path) if mask_path is not None else "the acquired lines"
        return measured_acquisition(raw, file_mask, None, size, info)
    if path.suffix != ".h5":
        raw, file_mask, info = kspace_files.load_kspace(path, axes)
        if mask_path is not None:
            file_mask = kspace_files.load_mask(mask_path, tuple(raw.shape[-2:]), axes)
            info["mask"] = str(mask_path)
        elif file_mask is None:
            file_mask = kspace_files.sampled_columns(raw)
            info["mask"] = "the columns holding data"
        else:
            info["mask"] = "the file's"
        return measured_acquisition(raw, file_mask, None, size, info)
    raw, file_maps, file_mask, info = load_fastmri_slice(path, slice_index)
    if mask_path is not None:
        file_mask = kspace_files.load_mask(mask_path, tuple(raw.shape[-2:]), axes)
    if file_mask is not None:
        info.update(source="fastmri (undersampled)", mask=str(mask_path) if mask_path is not None else "the file's")
        return measured_acquisition(raw, file_mask, file_maps, size, info)
    shape = crop_shape(size, tuple(raw.shape[-2:]))
    coil_images = center_crop(ifft2c(raw), shape)
    kspace = fft2c(coil_images)
    truth = rss(coil_images).to(torch.complex64)  # fastMRI's reconstruction_rss
    given_maps = center_crop(file_maps, shape) if file_maps is not None else None
    # Calibrate on the acquired (raw) FOV, whose centre lines a scanner measures, then crop the maps:
    # cropped coil images are not periodic, so ESPIRiT on the cropped k-space misfits at the edges.
    calibration = (raw, centre_columns(raw.shape[-1], center_fraction))
    info["source"] = "fastmri"
    return Acquisition(kspace, truth, given_maps, calibration, info, raw_shape=tuple(raw.shape))


def readout_height(size, raw: torch.Tensor, mask: torch.Tensor) -> int:
    """The readout length measured k-space is cropped to: ``task.size``'s height (null: all of it)."""
    if size is None:
        return raw.shape[-2]
    height, _ = image_size(size)
    if height > raw.shape[-2]:
        raise UserError(
            f"task.size={size}: the measured k-space has {raw.shape[-2]} readout samples (shape {tuple(raw.shape)}); "
            f"only the readout is cropped, to at most that: give task.size=null to keep it."
        )
    if height < raw.shape[-2] and not bool((mask == mask[:1]).all()):
        raise UserError(
            f"task.size={size}: the sampling mask varies along the readout, so a readout crop would change the "
            "measured data: give task.size=null."
        )
    return height


def measured_acquisition(raw: torch.Tensor, mask: torch.Tensor, file_maps, size, info: dict) -> Acquisition:
    """Measured k-space (C, H, W) and its mask (H, W), the readout centre-cropped to ``size``'s height (an exact
    operation on column-undersampled data: every column is fully sampled along the readout); no ground truth."""
    if tuple(mask.shape) != tuple(raw.shape[-2:]):
        raise UserError(
            f"task.mask_path: the mask has shape {tuple(mask.shape)} but the k-space is {tuple(raw.shape[-2:])}: give "
            "the acquisition's mask."
        )
    unmasked = float((raw.abs() * (1 - mask)).max()) if raw.numel() else 0.0
    if unmasked > 0:
        log.warning("The k-space holds data where its mask is 0; the reconstruction uses the masked data only.")
    height = readout_height(size, raw, mask)
    shape = (height, raw.shape[-1])
    cropped_mask = center_crop(mask, shape).contiguous()
    kspace = raw if height == raw.shape[-2] else fft2c(center_crop(ifft2c(raw * mask), shape)) * cropped_mask
    given_maps = center_crop(file_maps, shape) if file_maps is not None else None
    calibration = (raw * mask, kspace_files.calibration_columns(mask))
    info.update(coils=raw.shape[0])
    return Acquisition(kspace, None, given_maps, calibration, info, cropped_mask, tuple(raw.shape))


def undersample(
    kspace: torch.Tensor, mask: str, acceleration, center_fraction: float, mask_seed: int, density_power: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampled columns (W,), the mask (H, W) and the measured (masked) k-space (C, H, W)."""
    height, width = kspace.shape[-2:]
    columns = column_mask(mask, width, acceleration, center_fraction, mask_seed, density_power)
    full_mask = columns.expand(height, width).clone()
    return columns, full_mask, kspace * full_mask


def coil_maps(
    maps: str,
    acquisition: Acquisition,
    measured: torch.Tensor,
    columns: torch.Tensor,
    espirit: dict,
    file: str | None,
    axes=("coil", "readout", "phase"),
) -> torch.Tensor:
    """The operator's coil maps (C, H, W): the given ones, a maps file's, ones for a single coil, or ESPIRiT's."""
    shape = tuple(measured.shape[-2:])
    if maps == "given":
        if acquisition.given_maps is None:
            raise UserError(f"'{file}' has no 'sens_maps' dataset: use task.maps=espirit or task.maps=<maps file>.")
        return acquisition.given_maps
    if maps not in MAPS_CHOICES:
        return center_crop(kspace_files.load_maps(maps, acquisition.raw_shape or tuple(measured.shape), axes), shape)
    if measured.shape[0] == 1:
        return torch.ones_like(acquisition.kspace)  # single coil: no sensitivity weighting
    kspace_centre, centre = acquisition.calibration or (measured, columns)
    if acquisition.mask is not None:
        start, stop = acs_columns(centre)
        if stop - start < 3:
            raise UserError(
                f"task.maps=espirit: the measured k-space has {stop - start} fully sampled centre columns (ESPIRiT "
                "needs at least 3): give coil maps with task.maps=<maps file> (e.g. BART ecalib's output)."
            )
    return center_crop(estimate_maps(kspace_centre, centre, espirit), shape)


def scale_measurement(operator: MultiCoilMRI, measured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """y and the zero-filled reconstruction divided by the latter's maximum magnitude, and that scale."""
    zero_filled = operator.adjoint(measured[None])
    scale = float(zero_filled.abs().max())
    if not scale > 0:
        raise UserError("The zero-filled reconstruction is zero everywhere: check the mask and the k-space data.")
    return measured[None] / scale, zero_filled / scale, scale


def holdable_kspace(mask: torch.Tensor) -> torch.Tensor:
    """The k-space locations (1, 1, H, W) a held-out split may take: sampled ones outside the fully sampled centre
    columns (the calibration region, which the coil maps and the low frequencies rest on); one location holds all
    coils' samples."""
    sampled = mask > 0
    height, width = sampled.shape
    columns = acs_columns(sampled[height // 2])  # the sampled run through the centre, along each axis
    rows = acs_columns(sampled[:, width // 2])
    holdable = sampled.clone()
    holdable[rows[0] : rows[1], columns[0] : columns[1]] = False
    return holdable[None, None]


def mri_problem(
    operator: MultiCoilMRI,
    y: torch.Tensor,
    zero_filled: torch.Tensor,
    truth: torch.Tensor | None,
    scale: float,
    cg_iterations: int,
    info: dict,
    l1_options: dict | None = None,
    complex_baselines: dict[str, torch.Tensor] | None = None,
) -> InverseProblem:
    """The task in network space (real, imaginary channels), with the zero-filled, CG-SENSE and L1-wavelet SENSE
    (``l1_options``: keywords of ``l1_wavelet_sense``) baselines; ``y`` and ``zero_filled`` are already divided by
    ``scale``, ``truth`` (None: no ground truth) is not; ``complex_baselines`` are more complex (1, H, W) estimates on
    that scale."""
    height, width = zero_filled.shape[-2:]
    cg_estimate = cg_sense(operator, zero_filled, cg_iterations)
    l1_estimate, iterations = l1_wavelet_sense(operator, y, zero_filled, **(l1_options or {}))
    info.setdefault("baseline_iterations", {})["l1_wavelet"] = iterations
    baselines = {
        "zero_filled": to_channels(zero_filled),
        "cg_sense": to_channels(cg_estimate),
        "l1_wavelet": to_channels(l1_estimate),
        **{name: to_channels(image) for name, image in (complex_baselines or {}).items()},
    }
    common = dict(
        name="mri",
        operator=operator,
        y=y,
        image_shape=(2, height, width),
        init=to_channels(zero_filled),
        holdable=holdable_kspace(operator.mask),
        init_from=lambda measured: to_channels(operator.adjoint(measured)),
        baselines=baselines,
        to_domain=to_complex,
        from_domain=to_channels,
        to_display=functools.partial(support_magnitude, operator=operator),
        info=info,
    )
    if truth is None:
        # No ground truth to set the display range: the CG-SENSE fit of the data bounds the image's magnitude.
        peak = max(1.0, float((cg_estimate.abs() * operator.support).max()))
        display = (
            "the magnitude |x| inside the coil maps' support, on [0, the CG-SENSE baseline's peak] (no ground truth)"
        )
        return InverseProblem(**common, data_range=peak, metric_conventions={"display": display})
    x_true = to_channels(truth[None] / scale)

    def fastmri_metrics(x: torch.Tensor) -> dict[str, torch.Tensor]:
        magnitude, truth_magnitude = support_magnitude(x, operator), support_magnitude(x_true.to(x.device), operator)
        return {"ssim_fastmri": ssim_fastmri(magnitude, truth_magnitude), "nmse": nmse(magnitude, truth_magnitude)}

    return InverseProblem(
        **common,
        x_true=x_true,
        data_range=float(truth.abs().max() / scale),
        extra_metrics=fastmri_metrics,
        metric_conventions={
            "display": "the magnitude |x| inside the coil maps' support (ground truth: the RSS of the coil images)",
            "ssim_fastmri": "fastMRI's SSIM (fastmri.evaluate.ssim = skimage structural_similarity defaults): 7×7 "
            "uniform window, sample covariance, K1 0.01, K2 0.03, data_range = the slice's ground-truth maximum, on "
            "the magnitude inside the support, not clamped",
            "nmse": "fastMRI's NMSE ‖gt − x‖² / ‖gt‖² on the magnitude inside the support, not clamped",
        },
    )

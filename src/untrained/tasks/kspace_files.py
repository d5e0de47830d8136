"""Measured (already undersampled) Cartesian k-space, coil maps and sampling masks from files.

Formats: BART's ``.cfl``/``.hdr`` pairs (axes 0 readout kx, 1 phase encoding ky, 2 kz, 3 coils, 4 map sets),
``.npy``/``.npz`` arrays (axes in ``task.axes`` order, default [coil, readout, phase]), and fastMRI HDF5 files that
hold only undersampled k-space (the challenge/test sets: a ``mask`` dataset, no ``reconstruction_rss``), and ISMRMRD
HDF5 raw data (Cartesian 2D, with the ``ismrmrd`` package: ``pip install -e ".[io]"``).
Every array is returned as the task's layout: k-space and maps (C, H, W) with H the readout and W the
phase-encoding axis (fastMRI's layout: the mask selects columns), masks (H, W).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch

from untrained.errors import UserError, check_array, read_npy

KSPACE_SUFFIXES = (".cfl", ".hdr", ".npy", ".npz")
ROLES = ("coil", "readout", "phase")
ROLE_NAMES = {"coil": "coil", "coils": "coil", "readout": "readout", "kx": "readout", "phase": "phase", "ky": "phase"}


# BART .cfl/.hdr -----------------------------------------------------------------------------------------
def cfl_paths(path: str | Path) -> tuple[Path, Path]:
    """(header, data) of a BART file named by its base name, its .cfl or its .hdr."""
    path = Path(path).expanduser()
    base = path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path
    return base.with_suffix(".hdr"), base.with_suffix(".cfl")


def write_cfl(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as BART's pair: ``.hdr`` (text dimensions), ``.cfl`` (complex64, column-major)."""
    header, data = cfl_paths(path)
    array = np.asarray(array)
    header.write_text("# Dimensions\n" + " ".join(str(n) for n in array.shape) + " \n")
    np.asfortranarray(array.astype("<c8")).ravel(order="F").tofile(data)


def read_cfl(path: str | Path, what: str) -> np.ndarray:
    """A BART array (complex64, its header's dimensions without trailing ones); ``what`` names it in errors."""
    header, data = cfl_paths(path)
    for part in (header, data):
        if not part.is_file():
            raise UserError(f"{what}: '{part}' does not exist: a BART file is a .hdr/.cfl pair with one base name.")
    lines = [line.strip() for line in header.read_text(errors="replace").splitlines()]
    values = [line for line in lines if line and not line.startswith("#")]
    try:
        dims = [int(n) for n in values[0].split()] if values else []
    except ValueError:
        dims = []
    if not dims or any(n < 0 for n in dims):
        raise UserError(
            f"{what}: '{header}' holds no dimensions line ('# Dimensions' then e.g. '64 64 1 4'): "
            "write it with BART or untrained.tasks.kspace_files.write_cfl."
        )
    count = math.prod(dims)
    size = data.stat().st_size
    if size != 8 * count:
        raise UserError(
            f"{what}: '{data}' has {size} bytes but its header says {dims} = {count} complex64 values "
            f"({8 * count} bytes): give the .cfl that belongs to this .hdr."
        )
    while len(dims) > 2 and dims[-1] == 1:  # BART writes all 16 of its dimensions
        dims.pop()
    return np.fromfile(data, dtype="<c8", count=count).reshape(dims, order="F")


def bart_to_task(array: np.ndarray, what: str, maps: bool = False) -> np.ndarray:
    """BART (kx, ky, kz, coils[, map sets]) → (coils, kx, ky) = (C, H, W); 2D data (kz = 1) only."""
    dims = list(array.shape) + [1] * max(0, 5 - array.ndim)
    if dims[2] != 1 or any(n != 1 for n in dims[5:]) or (dims[4] != 1 and not maps):
        raise UserError(
            f"{what} has BART dimensions {list(array.shape)}: expected 2D Cartesian data (kx, ky, 1, coils), one "
            "slice (kz = 1): extract a slice first (e.g. bart slice 2 <index> in out)."
        )
    array = array.reshape(dims[:5], order="F")[:, :, 0, :, 0]  # the first set of maps (BART ecalib's strongest)
    return np.transpose(array, (2, 0, 1))


# .npy / .npz ----------------------------------------------------------------------------------------------
def axis_names(axes) -> list[str]:
    """``task.axes`` as names: a list ([coil, ky, kx]) or one string ('coil,ky,kx')."""
    if isinstance(axes, str):
        return [name.strip().lower() for name in axes.replace(",", " ").split()]
    try:
        return [str(name).strip().lower() for name in axes]
    except TypeError:
        return []


def parse_axes(axes) -> tuple[int, int, int]:
    """``task.axes`` (e.g. [coil, readout, phase]; kx = readout, ky = phase) → the file positions of (coil,
    readout, phase)."""
    roles = [ROLE_NAMES.get(name) for name in axis_names(axes)]
    if sorted(role or "" for role in roles) != sorted(ROLES):
        raise UserError(
            f"task.axes={axes!r} is not an order of the three axes coil, readout (kx) and phase (ky): e.g. "
            "task.axes=[coil,readout,phase] (fastMRI's order) or task.axes=[coil,ky,kx]."
        )
    return tuple(roles.index(role) for role in ROLES)


def read_array(path: Path, what: str, key: str) -> tuple[np.ndarray, str]:
    """The array of a .npy file, or the ``key`` array of an .npz (the only one if it holds one); its origin."""
    if path.suffix == ".npy":
        return read_npy(path, what), str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(
            f"Cannot read {what} '{path}' as an .npz archive ({error}): save it with numpy.savez."
        ) from None
    with archive:
        names = list(archive.files)
        if key not in names and len(names) != 1:
            raise UserError(
                f"{what} '{path}' has no '{key}' array (it has {names}): save it as numpy.savez(..., {key}=array)."
            )
        name = key if key in names else names[0]
        try:
            return archive[name], f"{path}:{name}"
        except ValueError as error:
            raise UserError(f"Cannot read {what} '{path}:{name}' ({error}): save plain numeric arrays.") from None


def to_task_layout(array: np.ndarray, axes, what: str) -> np.ndarray:
    """A (C, H, W) array in the file's ``task.axes`` order (2D: one coil, the readout/phase order of the axes)."""
    order = parse_axes(axes)
    if array.ndim == 2:  # single coil: the readout and phase axes in the order task.axes gives them
        return (array.T if order[1] > order[2] else array)[None]
    return np.transpose(array, order)


# Loaders -------------------------------------------------------------------------------------------------
def existing(path, option: str) -> Path:
    path = Path(str(path)).expanduser()
    header, data = cfl_paths(path)
    if path.suffix in (".cfl", ".hdr") or (not path.exists() and header.is_file()):
        return data.with_suffix(".cfl")
    if not path.is_file():
        raise UserError(f"{option}='{path}' does not exist: give an existing .h5, .cfl/.hdr, .npy or .npz file.")
    if path.suffix not in KSPACE_SUFFIXES + (".h5",):
        raise UserError(f"{option}='{path}' has suffix '{path.suffix}': give a .h5, .cfl/.hdr, .npy or .npz file.")
    return path


def read_complex(path: Path, option: str, what: str, key: str, axes, maps: bool = False) -> np.ndarray:
    """A (C, H, W) complex array of a .cfl/.npy/.npz file, checked (dtype, rank, empty, NaN)."""
    if path.suffix == ".cfl":
        array = bart_to_task(check_array(f"{option} '{path}'", read_cfl(path, option), (2, 3, 4, 5), "c"), what, maps)
    else:
        raw, origin = read_array(path, what, key)
        array = to_task_layout(check_array(f"{option} '{origin}'", raw, (2, 3), kinds="iufc"), axes, what)
    return np.ascontiguousarray(array)


def load_kspace(path, axes) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Measured k-space (C, H, W) complex64 of a .cfl/.npy/.npz file (task.file), and the .npz's 'mask' if any."""
    path = existing(path, "task.file")
    kspace = torch.from_numpy(read_complex(path, "task.file", f"k-space '{path}'", "kspace", axes)).to(torch.complex64)
    mask = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "mask" in archive.files and "kspace" in archive.files:
                mask = mask_layout(archive["mask"], tuple(kspace.shape[-2:]), axes, f"'{path}:mask'", "task.file")
    info = {
        "file": str(path),
        "source": "kspace file",
        "format": path.suffix.lstrip("."),
        "kspace_shape": list(kspace.shape),
    }
    return kspace, mask, info


def mask_layout(array, shape: tuple[int, int], axes, what: str, option: str) -> torch.Tensor:
    """A sampling mask as (H, W) 0/1 floats: one entry per phase-encoding column (W,), or (readout, phase) in the
    file's axis order (BART: (kx, ky)); non-zero entries are sampled."""
    array = check_array(f"{option} {what}", array, (1, 2), kinds="biufc")
    height, width = shape
    if array.ndim == 2 and 1 in array.shape and width in array.shape:
        array = array.reshape(-1)  # a row or column of column flags
    if array.ndim == 2:
        order = parse_axes(axes) if axes is not None else (0, 1, 2)
        array = array.T if order[1] > order[2] else array
    if array.shape not in ((width,), (height, width)):
        raise UserError(
            f"{option}: the mask {what} has shape {array.shape} but the k-space is {height} (readout) × {width} "
            f"(phase encoding): give one entry per phase-encoding column ({width},) or a ({height}, {width}) mask."
        )
    mask = torch.from_numpy(np.abs(array) > 0).float()
    mask = mask.expand(height, width).clone() if mask.ndim == 1 else mask
    if not mask.any():
        raise UserError(f"{option}: the mask {what} samples nothing (all zeros): give the acquisition's mask.")
    return mask


def load_mask(path, shape: tuple[int, int], axes) -> torch.Tensor:
    """``task.mask_path``: a .npy/.npz/.cfl mask for k-space of spatial shape (H, W)."""
    path = existing(path, "task.mask_path")
    what = f"'{path}'"
    if path.suffix == ".cfl":
        array = read_cfl(path, "task.mask_path")
        dims = list(array.shape) + [1] * max(0, 2 - array.ndim)
        if any(n != 1 for n in dims[2:]):
            raise UserError(
                f"task.mask_path: the mask {what} has BART dimensions {dims}: expected (kx, ky) or (1, ky)."
            )
        return mask_layout(array.reshape(dims[:2], order="F"), shape, None, what, "task.mask_path")
    if path.suffix == ".h5":
        raise UserError(
            f"task.mask_path='{path}': give the mask as .npy, .npz or .cfl (a fastMRI file's own mask is "
            "read from the file)."
        )
    array, origin = read_array(path, "mask", "mask")
    return mask_layout(array, shape, axes, f"'{origin}'", "task.mask_path")


def load_maps(path, shape: tuple[int, ...], axes) -> torch.Tensor:
    """``task.maps=<file>``: coil maps (C, H, W) of a .npy/.npz/.cfl file (BART ecalib's output: its first set),
    of the k-space's shape or of the reconstruction's (readout-cropped) one."""
    path = existing(path, "task.maps")
    if path.suffix == ".h5":
        raise UserError(
            f"task.maps='{path}': a fastMRI file's own maps are task.maps=given; a maps file is .npy, .npz or .cfl."
        )
    maps = read_complex(path, "task.maps", f"coil maps '{path}'", "maps", axes, maps=True)
    if maps.shape[0] != shape[0] or maps.shape[-1] != shape[-1] or maps.shape[-2] < shape[-2]:
        raise UserError(
            f"task.maps: the coil maps '{path}' have shape {maps.shape} (coils, readout, phase) but the k-space is "
            f"{tuple(shape)}: give maps of the k-space's shape (in task.axes order), or task.maps=espirit."
        )
    return torch.from_numpy(maps).to(torch.complex64)


# ISMRMRD HDF5 -------------------------------------------------------------------------------------------
ISMRMRD = "{http://www.ismrm.org/ISMRMRD}"
# Acquisitions that are not image data: noise scans, navigators, phase correction, dummy scans, feedback.
SKIPPED_FLAGS = (19, 23, 24, 26, 27, 28, 29, 30, 31)


def is_ismrmrd(path: Path) -> bool:
    """An HDF5 file holding ISMRMRD raw data (a ``dataset`` group with ``data`` and ``xml``), not a fastMRI file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "kspace" not in handle and "dataset" in handle and "data" in handle["dataset"]
    except OSError:
        return False


def ismrmrd_encoding(xml: bytes | str, what: str) -> tuple[int, int]:
    """(phase-encoding lines, index of the k-space centre line) from the ISMRMRD XML header; 2D only."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise UserError(f"{what}: its XML header is not readable ({error}): give an ISMRMRD file.") from None
    encoding = root.find(f"{ISMRMRD}encoding")
    size = encoding.find(f"{ISMRMRD}encodedSpace/{ISMRMRD}matrixSize") if encoding is not None else None
    if size is None:
        raise UserError(f"{what}: its XML header has no encoding/encodedSpace/matrixSize: give an ISMRMRD file.")
    lines, depth = int(size.findtext(f"{ISMRMRD}y", "0")), int(size.findtext(f"{ISMRMRD}z", "1"))
    if depth > 1:
        raise UserError(f"{what}: 3D encoding ({depth} partitions): only 2D Cartesian data is read; convert one slice.")
    centre = encoding.findtext(f"{ISMRMRD}encodingLimits/{ISMRMRD}kspace_encoding_step_1/{ISMRMRD}center")
    return lines, int(centre) if centre is not None else lines // 2


def load_ismrmrd(path: Path, slice_index: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One slice of Cartesian ISMRMRD raw data as k-space (C, readout samples, phase lines) and its mask (H, W):
    each line at its ``kspace_encode_step_1`` (shifted so the header's centre line lands at W // 2), reversed lines
    flipped, averages averaged; contrast, phase, repetition and set 0 only; noise, navigator and other non-image
    acquisitions skipped."""
    try:
        import ismrmrd
    except ImportError:
        raise UserError(
            f"task.file='{path}' is ISMRMRD raw data: install its reader (pip install -e \".[io]\") or convert it to "
            ".npy/.cfl."
        ) from None
    what = f"task.file '{path}'"
    with ismrmrd.Dataset(str(path), "dataset", mode="r") as dataset:
        try:
            xml, count = dataset.read_xml_header(), dataset.number_of_acquisitions()
        except LookupError as error:
            raise UserError(f"{what}: {error}: give an ISMRMRD file with its XML header and acquisitions.") from None
        lines, centre = ismrmrd_encoding(xml, what)
        acquisitions = [dataset.read_acquisition(i) for i in range(count)]
    images = [
        a
        for a in acquisitions
        if not any(a.is_flag_set(flag) for flag in SKIPPED_FLAGS)
        and a.idx.contrast == a.idx.phase == a.idx.repetition == a.idx.set == 0
    ]
    if not images:
        raise UserError(f"{what} holds no image acquisitions ({count} acquisitions, none of them image data).")
    slices = sorted({a.idx.slice for a in images})
    index = slices[len(slices) // 2] if slice_index is None else slice_index
    if index not in slices:
        raise UserError(f"task.slice={slice_index} is out of range: {what} has slices {slices}.")
    chosen = [a for a in images if a.idx.slice == index]
    shapes = {a.data.shape for a in chosen}
    if len(shapes) != 1:
        raise UserError(f"{what}: the acquisitions of slice {index} have different shapes {sorted(shapes)}.")
    coils, samples = shapes.pop()
    kspace = np.zeros((coils, samples, lines), np.complex64)
    counts = np.zeros(lines)
    offset = lines // 2 - centre
    for acquisition in chosen:
        line = acquisition.idx.kspace_encode_step_1 + offset
        if not 0 <= line < lines:
            raise UserError(
                f"{what}: line {acquisition.idx.kspace_encode_step_1} is outside the {lines} encoded lines."
            )
        data = acquisition.data[:, ::-1] if acquisition.is_flag_set(22) else acquisition.data  # ACQ_IS_REVERSE
        kspace[:, :, line] += data
        counts[line] += 1
    kspace /= np.maximum(counts, 1)
    check_array(what, kspace, (3,), "c")
    mask = torch.from_numpy(counts > 0).float().expand(samples, lines).clone()
    info = {
        "file": str(path),
        "source": "ismrmrd",
        "slice": index,
        "slices": len(slices),
        "kspace_shape": list(kspace.shape),
    }
    return torch.from_numpy(kspace), mask, info


def sampled_columns(kspace: torch.Tensor) -> torch.Tensor:
    """(H, W) mask of the columns holding any non-zero value (a zero-filled acquisition without a mask file)."""
    columns = (kspace.abs().sum(dim=(0, 1)) > 0).float()
    return columns.expand(kspace.shape[-2], kspace.shape[-1]).clone()


def calibration_columns(mask: torch.Tensor) -> torch.Tensor:
    """The columns (W,) sampled over the whole readout: ESPIRiT's fully sampled centre is their block around
    the centre column (``coils.acs_columns``)."""
    return mask.bool().all(dim=0).float()

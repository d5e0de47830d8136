"""CT from measured projections (issue 19): a sinogram read from a file instead of simulated from an image.

Formats (by suffix; docs/measured_ct.md): Data Exchange HDF5 (.h5/.hdf5/.hdf/.nxs: exchange/data,
exchange/data_white, exchange/data_dark, exchange/theta), .npy (the sinogram alone), .npz and MATLAB .mat,
v5 (scipy) or v7.3 (HDF5, column-major: arrays are transposed back to MATLAB's shape), with named arrays;
a dotted name reaches into MATLAB structs and HDF5 groups (``CtDataFull.sinogram``).

Transmission data (counts) are flat/dark corrected and log-transformed, −ln((I − dark)/(flat − dark));
post-log data (line integrals) are used as they are. A 3D stack is (angles, slices, detectors), Data
Exchange's theta:y:x; ``task.slice`` picks one. Geometry: parallel or fan beam (flat detector), the scan's
own angles, detector bins optionally averaged in groups (``task.detector_binning``).

Sparse views: ``task.views`` of the measured angles. Without a ground truth, the image metrics compare with
a reconstruction of ALL measured views (``task.reference``: fbp | tv | none), as the Helsinki Tomography
Challenge 2022 scored against full-data reconstructions; ``none`` runs without ground truth.

Images keep the CT task's convention: attenuation divided by ``info["scale"]`` (the maximum of the
all-views FBP), in [0, 1]-ish; attenuation = image × scale, in ``info["units"]`` (1 / the unit of the
detector pixel size).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from untrained.baselines.iterative import cgls
from untrained.baselines.tv import tv_pdhg
from untrained.errors import (
    UserError,
    check_array,
    check_choice,
    check_in_range,
    check_integer,
    check_positive,
    read_npy,
)
from untrained.operators.ct import measured_geometry, measured_transform, view_angles
from untrained.problem import InverseProblem

ROOT = Path(__file__).resolve().parents[3]  # the repository: relative paths are also looked up here (data/)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
SUFFIXES = (*HDF5_SUFFIXES, ".npy", ".npz", ".mat")
# The default array names of each format (Data Exchange: https://dxfile.readthedocs.io).
DEFAULT_KEYS = {
    "hdf5": {
        "sinogram": "exchange/data",
        "angles": "exchange/theta",
        "flat": "exchange/data_white",
        "dark": "exchange/data_dark",
    },
    "npz": {"sinogram": "sinogram", "angles": "angles", "flat": "flat", "dark": "dark"},
    "mat": {"sinogram": "sinogram", "angles": "angles", "flat": "flat", "dark": "dark"},
}
OPTION = {
    "sinogram": "task.sinogram_key",
    "angles": "task.angles_key",
    "flat": "task.flat_key",
    "dark": "task.dark_key",
}
MEASUREMENTS = ("transmission", "post_log")
ANGLE_UNITS = ("degrees", "radians")
REFERENCES = ("fbp", "tv", "none")
SMALLEST_TRANSMISSION = 1e-6  # corrected transmission is clipped here before the log (ln 1e-6 ≈ −13.8)


# Reading ------------------------------------------------------------------------------------------
def resolve_data_path(source: str | None) -> Path:
    """``task.sinogram`` as given, else relative to the repository (data/tooth.h5 from any directory)."""
    if source is None:
        raise UserError(
            "task.sinogram is not set: give a sinogram file (docs/measured_ct.md), or run a sample: "
            "experiment=ct_tooth or experiment=ct_htc2022."
        )
    path = Path(source).expanduser()
    if not path.exists() and not path.is_absolute() and (ROOT / path).exists():
        path = ROOT / path
    if not path.is_file():
        raise UserError(f"task.sinogram='{source}' is not a file: give the path of a {'/'.join(SUFFIXES)} file.")
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"task.sinogram='{source}' has suffix '{path.suffix}': give a {'/'.join(SUFFIXES)} file.")
    return path


def _mat_names(tree: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in tree.items():
        if key.startswith("__"):
            continue
        names += _mat_names(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return names


class ArrayFile:
    """The named arrays of one file: ``names`` (all of them) and ``get(name)`` (None when absent)."""

    def __init__(self, path: Path):
        import h5py

        self.path = path
        suffix = path.suffix.lower()
        try:
            if suffix in HDF5_SUFFIXES or (suffix == ".mat" and h5py.is_hdf5(path)):
                self.format = "hdf5" if suffix in HDF5_SUFFIXES else "mat"
                self.transpose = suffix == ".mat"  # MATLAB v7.3 writes column-major: h5py sees the reversed shape
                self.arrays = {}
                with h5py.File(path, "r") as file:
                    file.visititems(self._visit)
            elif suffix == ".npy":
                self.format, self.transpose = "npy", False
                self.arrays = {"sinogram": read_npy(path, "sinogram")}
            elif suffix == ".npz":
                self.format, self.transpose = "npz", False
                with np.load(path, allow_pickle=False) as file:
                    self.arrays = {name: file[name] for name in file.files}
            else:
                import scipy.io

                self.format, self.transpose = "mat", False
                tree = scipy.io.loadmat(path, simplify_cells=True)
                self.arrays = {name: self._mat_value(tree, name) for name in _mat_names(tree)}
        except (OSError, ValueError, EOFError, NotImplementedError) as error:
            raise UserError(
                f"Cannot read task.sinogram='{path}' ({str(error).splitlines()[0]}): give a readable "
                f"{'/'.join(SUFFIXES)} file."
            ) from None

    def _visit(self, name: str, item) -> None:
        import h5py

        if isinstance(item, h5py.Dataset) and item.dtype.kind in "iufb":  # read lazily: only what is asked for
            self.arrays[name.replace("/", ".") if self.format == "mat" else name] = name

    def _read(self, name: str, middle: int | None) -> tuple[np.ndarray, tuple[int, ...]]:
        """The array ``name`` (of a 3D one, only [:, middle] when ``middle`` is given) and its full shape."""
        stored = self.arrays[name]
        if not isinstance(stored, str):
            array = np.asarray(stored)
            return (array[:, middle] if middle is not None and array.ndim == 3 else array), array.shape
        import h5py

        with h5py.File(self.path, "r") as file:
            dataset = file[stored]
            shape = dataset.shape[::-1] if self.transpose else dataset.shape
            # the middle axis of three is the middle one in either storage order
            array = dataset[:, middle, :] if middle is not None and len(shape) == 3 else dataset[()]
        return (np.asarray(array).T if self.transpose else np.asarray(array)), tuple(shape)

    @staticmethod
    def _mat_value(tree: dict, name: str):
        for part in name.split("."):
            tree = tree[part]
        return tree

    @property
    def names(self) -> list[str]:
        return sorted(self.arrays)

    def get(
        self, kind: str, key: str | None, required: bool, middle: int | None = None
    ) -> tuple[np.ndarray | None, tuple[int, ...]]:
        """(the array ``key`` names (null: the format's default name for ``kind``), of a 3D array only [:, middle]
        when ``middle`` is given; its full shape). A missing array stops when the key was given or ``required``,
        listing the names the file holds; else (None, ())."""
        if self.format == "npy":
            if kind == "sinogram":
                return self._read("sinogram", middle)
            if key is not None:
                raise UserError(f"{OPTION[kind]}={key}: a .npy file holds the sinogram alone; set {OPTION[kind]}=null.")
            return None, ()
        name = key if key is not None else DEFAULT_KEYS[self.format][kind]
        name = name.replace("/", ".") if self.format == "mat" else name.strip("/")
        if name in self.arrays:
            return self._read(name, middle)
        if key is not None or required:
            raise UserError(
                f"{OPTION[kind]}: '{name}' is not an array of '{self.path}', which holds: {', '.join(self.names)}; "
                f"set {OPTION[kind]} to one of them"
                + (" (or task.scan_range for equispaced angles)." if kind == "angles" else ".")
            )
        return None, ()


def field_row(
    array: np.ndarray, shape: tuple[int, ...], kind: str, slices: int | None, slice_index: int, detectors: int
) -> np.ndarray:
    """The (detectors,) flat or dark row of the slice: for a 3D sinogram (``slices`` given) the mean over frames
    of (frames, slices, detectors) (``array`` already holds [:, slice_index]) or the row of (slices, detectors);
    for a 2D one the mean of (frames, detectors), or (detectors,) as it is."""
    if slices is not None and len(shape) == 3 and shape[1] == slices:
        array = array.mean(0)
    elif slices is not None and len(shape) == 2 and shape[0] == slices:
        array = array[slice_index]
    elif slices is None and len(shape) == 2:
        array = array.mean(0)
    if array.shape != (detectors,):
        expected = (
            f"(frames, {slices}, {detectors})" if slices is not None else f"(frames, {detectors}) or ({detectors},)"
        )
        raise UserError(
            f"{OPTION[kind]}: the {kind} field has shape {shape}, which does not fit the sinogram: expected "
            f"{expected}; give the {kind} field of this scan."
        )
    return array


def read_measurement(
    path: Path,
    sinogram_key: str | None,
    angles_key: str | None,
    flat_key: str | None,
    dark_key: str | None,
    measurement: str,
    slice_index: int,
    angle_units: str,
    scan_range: float | None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(line integrals (angles, detectors), angles in radians (increasing), facts) of one slice of the file."""
    check_choice("task.measurement", measurement, MEASUREMENTS)
    check_choice("task.angle_units", angle_units, ANGLE_UNITS)
    arrays = ArrayFile(path)
    _, shape = arrays.get("sinogram", sinogram_key, True, middle=0)
    stack = len(shape) == 3
    slices = shape[1] if stack else 1
    if not 0 <= slice_index < slices:
        raise UserError(f"task.slice={slice_index} is out of range: '{path}' holds {slices} slices (0..{slices - 1}).")
    data, _ = arrays.get("sinogram", sinogram_key, True, middle=slice_index)
    what = f"The sinogram '{path}' ({OPTION['sinogram']}, shape {shape})"
    data = check_array(what, data, (2,) if stack else (2, 3)).astype(np.float64)
    count, detectors = data.shape
    facts = {"file": str(path), "format": arrays.format, "slices": slices, "measured_detectors": detectors}

    angles, _ = arrays.get("angles", angles_key, required=scan_range is None)
    if angles is None:
        check_positive("task.scan_range", scan_range)
        angles = np.linspace(0.0, scan_range, count, endpoint=False)
        facts["angles"] = f"equispaced over task.scan_range={scan_range} {angle_units}"
    angles = check_array(f"The angles ({OPTION['angles']})", np.ravel(np.asarray(angles)), (1,)).astype(np.float64)
    if angles.size != count:
        raise UserError(
            f"{OPTION['angles']}: {angles.size} angles for a sinogram of {count} projections (shape {data.shape}): "
            "name the angles of this sinogram."
        )
    if angle_units == "radians" and np.ptp(angles) > 2 * math.pi + 1e-3:
        raise UserError(
            f"task.angle_units=radians, but the angles span {np.ptp(angles):.4g}: set task.angle_units=degrees."
        )
    radians = np.deg2rad(angles) if angle_units == "degrees" else angles
    order = np.argsort(radians, kind="stable")
    radians, data = radians[order], data[order]

    if measurement == "transmission":
        frames = {}
        for kind, key in (("flat", flat_key), ("dark", dark_key)):
            array, shape = arrays.get(kind, key, required=False, middle=slice_index if stack else None)
            if array is not None:
                array = check_array(f"The {kind} field ({OPTION[kind]})", array, (1, 2)).astype(np.float64)
                frames[kind] = field_row(array, shape, kind, slices if stack else None, slice_index, detectors)
        dark_row = frames.get("dark", 0.0)
        flat_row = frames.get("flat", 1.0)  # no flat field: the data are already I / I0
        transmission = (data - dark_row) / (flat_row - dark_row)
        bad = ~(transmission >= SMALLEST_TRANSMISSION)
        if bad.any():
            warnings.warn(
                f"task.sinogram: {int(bad.sum())} of {bad.size} corrected transmission values are <= "
                f"{SMALLEST_TRANSMISSION:g} (dark >= flat or counts at the dark level); they are clipped to "
                f"{SMALLEST_TRANSMISSION:g} before the log.",
                stacklevel=2,
            )
        data = -np.log(np.maximum(transmission, SMALLEST_TRANSMISSION))
        facts["flat_dark"] = sorted(frames)
    if not np.isfinite(data).all():
        raise UserError(f"The sinogram of '{path}' is not finite after the log: check task.measurement.")
    return data, radians, facts


def recentre(sinogram: np.ndarray, center: float) -> np.ndarray:
    """Each projection shifted (linear interpolation) so that detector bin ``center`` lands on the middle;
    bins shifted in from past the detector's ends take its edge value."""
    middle = (sinogram.shape[1] - 1) / 2
    if center == middle:
        return sinogram
    bins = np.arange(sinogram.shape[1], dtype=np.float64)
    return np.stack([np.interp(bins + (center - middle), bins, row) for row in sinogram])


def bin_detectors(sinogram: np.ndarray, binning: int) -> np.ndarray:
    """Means of ``binning`` adjacent detector bins (the last incomplete group dropped)."""
    detectors = sinogram.shape[1] // binning
    if detectors < 8:
        raise UserError(f"task.detector_binning={binning} leaves {detectors} detector bins: give a smaller binning.")
    return sinogram[:, : detectors * binning].reshape(sinogram.shape[0], detectors, binning).mean(2)


# The task -----------------------------------------------------------------------------------------
FULL_TURN = {"degrees": 360.0, "radians": 2 * math.pi}


def ct_measured(
    sinogram: str | None = None,
    sinogram_key: str | None = None,
    angles_key: str | None = None,
    flat_key: str | None = None,
    dark_key: str | None = None,
    measurement: str = "transmission",
    slice: int = 0,  # noqa: A002 (the option's name)
    angle_units: str = "degrees",
    scan_range: float | None = None,
    geometry: str = "parallel",
    source_origin: float | None = None,
    origin_detector: float | None = None,
    detector_pixel_size: float = 1.0,
    length_unit: str = "detector pixel",
    center: float | None = None,
    detector_binning: int = 1,
    size: int | None = None,
    extent: float | None = None,
    views: int | None = None,
    view_selection: str = "equispaced",
    reference: str = "none",
    impl: str | None = None,
    fbp_filter: str = "Hann",
    fbp_frequency_scaling: float = 0.85,
    tv_weight: float = 3e-4,
    tv_max_iterations: int = 2000,
    tv_tolerance: float = 1e-4,
    cgls_iterations: int = 50,
    noise_seed: int = 0,
) -> InverseProblem:
    check_integer("task.slice", slice, 0)
    check_integer("task.detector_binning", detector_binning, 1)
    check_choice("task.reference", reference, REFERENCES)
    # Options are checked when set, also where this geometry or file does not use them.
    check_in_range("task.detector_pixel_size", detector_pixel_size, 0, 1e6, low_open=True)
    for option, distance in (("task.source_origin", source_origin), ("task.origin_detector", origin_detector)):
        if distance is not None:
            check_positive(option, distance)
    if scan_range is not None:
        check_in_range(
            f"task.scan_range ({angle_units})", scan_range, 0, FULL_TURN.get(angle_units, 360.0), low_open=True
        )
    if fbp_frequency_scaling is None or not 0 < fbp_frequency_scaling <= 1:
        raise UserError(f"task.fbp_frequency_scaling must be in (0, 1], got {fbp_frequency_scaling}.")
    path = resolve_data_path(sinogram)
    data, angles, facts = read_measurement(
        path, sinogram_key, angles_key, flat_key, dark_key, measurement, slice, angle_units, scan_range
    )
    measured_detectors = data.shape[1]
    if center is not None and not (math.isfinite(center) and -0.5 <= center <= measured_detectors - 0.5):
        raise UserError(f"task.center={center} is off the detector: give a bin index in [0, {measured_detectors - 1}].")
    center = (measured_detectors - 1) / 2 if center is None else float(center)
    if geometry == "parallel":  # parallel rays: moving the axis to the detector's middle is a shift of the data
        data, center = recentre(data, center), (measured_detectors - 1) / 2
    data = bin_detectors(data, detector_binning)
    detectors = data.shape[1]
    spacing = detector_pixel_size * detector_binning
    # The axis in binned bins: binned bin j averages measured bins j·b … j·b + b − 1, centred at j·b + (b − 1)/2.
    center_offset = (center - (detector_binning - 1) / 2) / detector_binning - (detectors - 1) / 2
    center_offset = 0.0 if abs(center_offset) < 1e-9 else center_offset
    full_geometry = measured_geometry(
        angles, detectors, spacing, center_offset, geometry, source_origin, origin_detector
    )
    magnification = 1.0 if geometry == "parallel" else (source_origin + origin_detector) / source_origin
    half_width = detectors * spacing / 2 / magnification  # the detector's half width, seen at the rotation axis
    if extent is None:
        extent = half_width
    check_positive("task.extent", extent)
    if extent > 10 * half_width:
        raise UserError(
            f"task.extent={extent} is more than 10 times the scanned field's half width ({half_width:.4g} "
            f"{length_unit}): the image would be almost all outside it; leave task.extent=null."
        )
    if size is None:  # a pixel per detector bin at the axis
        size = detectors
    check_integer("task.size", size, 8, 4096)
    full_count = len(angles)
    if views is None:
        views = full_count
    check_integer(f"task.views (of the {full_count} measured angles)", views, 1, full_count)
    selected = view_angles(views, view_selection, noise_seed, full=full_count)

    # The all-views operator sets the image scale (max of its FBP) and, unless reference=none, the reference.
    full_operator = measured_transform(size, extent, full_geometry, impl)
    y_full_physical = torch.from_numpy(data).float()[None, None]
    fbp_physical = full_operator.fbp(y_full_physical * full_operator.scale, fbp_filter, fbp_frequency_scaling)
    scale = float(fbp_physical.max())
    if not scale > 0:
        raise UserError(f"The FBP of '{path}' is <= 0 everywhere: check task.measurement and task.sinogram_key.")
    x_true = None
    reference_iterations = None
    if reference != "none":
        x_true = (fbp_physical / scale).clamp(0, 1)
        if reference == "tv":
            y_full = y_full_physical * full_operator.scale / scale
            result = tv_pdhg(full_operator, y_full, tv_weight, x_true, (0.0, 1.0), tv_max_iterations, tv_tolerance, 1.0)
            x_true, reference_iterations = result.image, result.iterations

    sparse_geometry = measured_geometry(
        angles[selected], detectors, spacing, center_offset, geometry, source_origin, origin_detector
    )
    operator = measured_transform(size, extent, sparse_geometry, impl)
    operator.angle_indices = selected
    # y = A x with A normalised: the measured line integrals, in image units (attenuation / scale), times 1/‖A_odl‖.
    y = y_full_physical[:, :, selected] * operator.scale / scale
    fbp = operator.fbp(y, fbp_filter, fbp_frequency_scaling)
    init = fbp.clamp(0, 1)
    tv = tv_pdhg(operator, y, tv_weight, init, (0.0, 1.0), tv_max_iterations, tv_tolerance, operator_norm_value=1.0)
    cgls_estimate, cgls_done = cgls(operator, y, cgls_iterations)
    pixel_size = 2 * extent / size
    return InverseProblem(
        name="ct_measured",
        operator=operator,
        y=y,
        image_shape=(1, size, size),
        x_true=x_true,
        init=init,
        init_from=lambda sinogram: operator.fbp(sinogram, fbp_filter, fbp_frequency_scaling).clamp(0, 1),
        baselines={"fbp": fbp, "tv": tv.image, "cgls": cgls_estimate},
        info={
            **facts,
            "geometry": geometry,
            "views": views,
            "measured_views": full_count,
            "angles": selected.tolist(),
            "detectors": detectors,
            "reference": reference,
            "reference_iterations": reference_iterations,
            # attenuation = image × scale, in units; the reconstruction grid's pixel in length_unit
            "scale": scale,
            "units": f"1/{length_unit}",
            "pixel_size": pixel_size,
            "length_unit": length_unit,
            "operator_norm": operator.norm,
            "impl": operator.impl,
            "baseline_iterations": {"tv": tv.iterations, "cgls": cgls_done},
            "baseline_converged": {"tv": tv.converged},
        },
    )

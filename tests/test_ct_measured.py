"""CT from measured projections (task=ct_measured): the fan-beam and measured parallel-beam operators, the loaders
of every format on files written here, the flat/dark log transform, view selection, the two real samples
(tomopy's tooth, an HTC 2022 fan-beam sinogram), a run without ground truth, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from untrained.errors import UserError
from untrained.metrics import psnr
from untrained.operators.base import adjointness_error, operator_norm
from untrained.operators.ct import measured_geometry, measured_transform
from untrained.operators.generators.phantoms import random_ellipses
from untrained.tasks.ct_measured import bin_detectors, ct_measured, read_measurement, recentre
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]
TOOTH = ROOT / "data" / "tooth.h5"
HTC = ROOT / "data" / "htc2022_ta_full.mat"
# HTC 2022's geometry, from the file's own CtDataFull.parameters (data/ATTRIBUTION.md): distanceSourceOrigin
# 410.66 mm, distanceSourceDetector 553.74 mm, pixelSizePost 0.2 mm.
HTC_OPTIONS = dict(
    sinogram=str(HTC),
    sinogram_key="CtDataFull.sinogram",
    angles_key="CtDataFull.parameters.angles",
    measurement="post_log",
    geometry="fan",
    source_origin=410.66,
    origin_detector=553.74 - 410.66,
    detector_pixel_size=0.2,
    length_unit="mm",
    center=None,
    reference="fbp",
)
# The tooth as conf/experiment/ct_tooth.yaml sets it, tiny: 640 → 40 detector bins, 32² images.
TINY = dict(
    sinogram=str(TOOTH),
    center=296,
    reference="fbp",
    detector_binning=16,
    size=32,
    tv_max_iterations=20,
    cgls_iterations=5,
)


def tooth(**options):
    return ct_measured(**{**TINY, **options})


FAN = dict(kind="fan", source_origin=410.66, origin_detector=143.08)


# Operators --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,impl,offset",
    [("parallel", "astra_cpu", 0.0), ("parallel", "torch", 0.0), ("fan", "astra_cpu", 0.0), ("fan", "astra_cpu", 2.5)],
)
def test_measured_operators_are_adjoint_and_normalised(kind, impl, offset):
    angles = np.sort(np.random.default_rng(0).uniform(0, 2 * math.pi, 25))
    options = FAN if kind == "fan" else {"kind": kind}
    operator = measured_transform(32, 4.0, measured_geometry(angles, 48, 0.2, offset, **options), impl)
    assert adjointness_error(operator) < 1e-5
    assert abs(operator_norm(operator) - 1) < 1e-3
    assert operator.range_shape == (1, 25, 48)


def test_fan_beam_fbp_reconstructs_a_phantom():
    geometry = measured_geometry(np.deg2rad(np.arange(0, 360, 2.0)), 64, 0.2, 0.0, **FAN)
    operator = measured_transform(48, 64 * 0.2 / 2 * 410.66 / 553.74, geometry, "astra_cpu")
    x = torch.from_numpy(random_ellipses(48, 1))[None, None]
    assert psnr(operator.fbp(operator(x), "Hann", 1.0).clamp(0, 1), x) > 22


def test_fan_beam_with_the_torch_projector_names_astra_cpu():
    geometry = measured_geometry(np.linspace(0, 6, 10), 16, 1.0, 0.0, **FAN)
    with pytest.raises(UserError, match="task.impl=astra_cpu"):
        measured_transform(16, 5.0, geometry, "torch")


def test_detector_offset_of_a_fan_beam_moves_the_projection():
    point = torch.zeros(1, 1, 32, 32)
    point[..., 16, 16] = 1
    peaks = [
        measured_transform(32, 16.0, measured_geometry(np.array([0.0]), 40, 1.0, shift, **FAN), "astra_cpu")(point)
        .argmax()
        .item()
        for shift in (0.0, 5.0)
    ]
    assert peaks[1] - peaks[0] == 5


def test_recentre_and_binning():
    row = np.arange(8.0)[None]
    assert np.allclose(recentre(row, 4.5), [[1, 2, 3, 4, 5, 6, 7, 7]])  # bin 4.5 moves to the middle, 3.5
    assert np.allclose(bin_detectors(np.arange(34.0)[None], 4), [np.arange(8) * 4 + 1.5])


# Loaders on files written here -----------------------------------------------------------------------
def line_integrals(count: int = 20, detectors: int = 24) -> tuple[np.ndarray, np.ndarray]:
    angles = np.linspace(0, 180, count, endpoint=False)
    operator = measured_transform(16, 12.0, measured_geometry(np.deg2rad(angles), detectors, 1.0), "astra_cpu")
    x = torch.from_numpy(random_ellipses(16, 2))[None, None] * 0.05
    return (operator(x) / operator.scale)[0, 0].double().numpy(), angles


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` in the format of ``path``'s suffix; dotted names become MATLAB structs / HDF5 groups."""
    if path.suffix == ".npy":
        np.save(path, arrays["sinogram"])
    elif path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.name.endswith("v5.mat"):
        tree: dict = {}
        for name, array in arrays.items():
            *groups, leaf = name.split(".")
            node = tree
            for group in groups:
                node = node.setdefault(group, {})
            node[leaf] = array
        scipy.io.savemat(path, tree)
    else:  # HDF5: Data Exchange, or MATLAB v7.3 (column-major: the transposed array, a struct as a group)
        matlab = path.suffix == ".mat"
        with h5py.File(path, "w") as file:
            for name, array in arrays.items():
                file[name.replace(".", "/")] = np.asarray(array).T if matlab else array
    return path


@pytest.mark.parametrize("name", ["scan.h5", "scan.npz", "scan_v5.mat", "scan_v73.mat", "scan.npy"])
def test_every_format_reads_the_line_integrals(tmp_path, name):
    sinogram, angles = line_integrals()
    flat, dark = np.full((3, 24), 1000.0), np.full((3, 24), 100.0)
    counts = dark[0] + (flat[0] - dark[0]) * np.exp(-sinogram)
    if name == "scan.h5":  # Data Exchange: (angles, slices, detectors), slice 1 is the scan
        stack = lambda a: np.stack([a * 0 + a.mean(), a], 1)  # noqa: E731
        arrays = {
            "exchange/data": stack(counts),
            "exchange/theta": angles,
            "exchange/data_white": stack(flat),
            "exchange/data_dark": stack(dark),
        }
        keys, measurement, slice_index = {}, "transmission", 1
    elif name == "scan.npy":
        arrays, keys, measurement, slice_index = {"sinogram": sinogram}, {"scan_range": 180.0}, "post_log", 0
    else:
        arrays = {"scan.counts": counts, "scan.theta": angles, "scan.flat": flat[0], "scan.dark": dark}
        keys = {"sinogram_key": "scan.counts", "angles_key": "scan.theta", "flat_key": "scan.flat"}
        keys["dark_key"] = "scan.dark"
        measurement, slice_index = "transmission", 0
    path = write(tmp_path / name, arrays)
    options = {"sinogram_key": None, "angles_key": None, "flat_key": None, "dark_key": None, "scan_range": None}
    data, radians, facts = read_measurement(
        path, **{**options, **keys}, measurement=measurement, slice_index=slice_index, angle_units="degrees"
    )
    assert np.allclose(data, sinogram, atol=1e-6) and np.allclose(radians, np.deg2rad(angles))
    assert facts["slices"] == (2 if name == "scan.h5" else 1)


def test_flat_dark_log_transform_numbers(tmp_path):
    counts = np.array([[60.0, 20.0, 110.0], [35.0, 10.0, 10.0]])
    path = write(tmp_path / "t.npz", {"sinogram": counts, "angles": [0, 90], "flat": [110, 110, 110], "dark": [10] * 3})
    options = dict(sinogram_key=None, angles_key=None, flat_key=None, dark_key=None, scan_range=None, slice_index=0)
    with pytest.warns(UserWarning, match="2 of 6 corrected transmission values"):  # the counts at the dark level
        data, _, _ = read_measurement(path, **options, measurement="transmission", angle_units="degrees")
    assert np.allclose(data, -np.log([[0.5, 0.1, 1.0], [0.25, 1e-6, 1e-6]]))
    path = write(tmp_path / "p.npz", {"sinogram": counts, "angles": [0, 90]})
    data, radians, _ = read_measurement(path, **options, measurement="post_log", angle_units="degrees")
    assert np.array_equal(data, counts) and np.allclose(radians, [0, math.pi / 2])


def test_unsorted_angles_are_sorted_with_their_projections(tmp_path):
    path = write(tmp_path / "s.npz", {"sinogram": np.array([[1.0, 1.0], [2.0, 2.0]]), "angles": [1.5, 0.5]})
    options = dict(sinogram_key=None, angles_key=None, flat_key=None, dark_key=None, scan_range=None, slice_index=0)
    data, radians, _ = read_measurement(path, **options, measurement="post_log", angle_units="radians")
    assert np.allclose(radians, [0.5, 1.5]) and np.allclose(data[:, 0], [2, 1])


# The real samples ------------------------------------------------------------------------------------
def test_tooth_loads_and_sparse_views_lose_to_all_views():
    data, angles, facts = read_measurement(TOOTH, None, None, None, None, "transmission", 0, "degrees", None)
    assert data.shape == (181, 640) and facts["slices"] == 2 and facts["flat_dark"] == ["dark", "flat"]
    assert np.isclose(np.rad2deg(angles[-1]), 179.0055, atol=1e-3)
    problem = tooth(views=30, detector_binning=8, size=48)
    assert problem.y.shape == (1, 1, 30, 80) and problem.image_shape == (1, 48, 48)
    assert problem.info["units"] == "1/detector pixel" and np.isclose(problem.info["pixel_size"], 640 / 48)
    sparse = psnr(problem.baseline_fbp.clamp(0, 1), problem.x_true)
    denser = tooth(views=90, detector_binning=8, size=48)
    assert sparse < psnr(denser.baseline_fbp.clamp(0, 1), denser.x_true) - 3
    # the reference (FBP of all views) fits all the data: the image scale is consistent with the sinogram
    full = tooth(views=None, detector_binning=8, size=48)
    residual = (full.operator(full.x_true) - full.y).norm() / full.y.norm()
    assert residual < 0.2


def test_tooth_axis_at_296_beats_the_detector_middle():
    """tomopy's tutorial finds the tooth's axis at 295.9: the all-views FBP there has less negative mass than
    with the axis at the detector's middle (319.5)."""
    negative = [tooth(views=None, center=center).baseline_fbp.clamp(max=0).abs().sum() for center in (296, None)]
    assert negative[0] < 0.5 * negative[1]


def test_htc2022_fan_beam_sample():
    data, angles, _ = read_measurement(
        HTC, "CtDataFull.sinogram", "CtDataFull.parameters.angles", None, None, "post_log", 0, "degrees", None
    )
    assert data.shape == (721, 560) and np.isclose(np.rad2deg(angles[-1]), 360)
    problem = ct_measured(**HTC_OPTIONS, views=60, detector_binning=8, size=40, tv_max_iterations=30)
    assert problem.y.shape == (1, 1, 60, 70) and problem.info["geometry"] == "fan"
    # the acrylic disc (70 mm diameter) is about 0.0048/mm·… here only its scale's order: attenuation > 0
    assert problem.info["units"] == "1/mm" and 0.01 < problem.info["scale"] < 0.1
    assert psnr(problem.baseline_fbp.clamp(0, 1), problem.x_true) > 20


# View selection and the reference ---------------------------------------------------------------------
def test_view_selection_picks_measured_angles():
    equispaced = tooth(views=10, reference="none")
    assert equispaced.info["angles"] == np.round(np.linspace(0, 181, 10, endpoint=False)).astype(int).tolist()
    random = tooth(views=10, view_selection="random", noise_seed=3, reference="none")
    assert random.info["angles"] == sorted(random.info["angles"]) != equispaced.info["angles"]
    assert not random.has_ground_truth and random.info["measured_views"] == 181


def test_tv_reference():
    problem = tooth(views=20, reference="tv")
    assert problem.info["reference_iterations"] > 0 and problem.x_true.min() >= 0


def test_a_run_without_ground_truth_trains_and_writes(make_cfg):
    cfg = make_cfg(
        ["experiment=ct_tooth", "task.size=32", "task.detector_binning=16", "task.views=12", "task.reference=none"]
        + ["trainer.max_steps=5"]
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and "final_psnr" not in metrics
    assert (Path(cfg.paths.output_dir) / "reconstruction.npy").exists()


# Bad input -------------------------------------------------------------------------------------------
def bad_file(tmp_path: Path, case: str) -> dict:
    """Options of a run on a bad file (or bad options on a good one)."""
    good = {"sinogram": np.ones((6, 16)), "angles": np.arange(6.0) * 30}
    files = iter(range(100))  # every case's file of its own: the cases are all written before one is chosen
    npz = lambda arrays: {"sinogram": str(write(tmp_path / f"bad{next(files)}.npz", arrays))}  # noqa: E731
    post = {"measurement": "post_log", "center": None, "detector_binning": 1, "size": 16}
    cases = {
        "missing file": {"sinogram": str(tmp_path / "nope.h5")},
        "wrong suffix": {"sinogram": str(write(tmp_path / "x.npz", good)).replace(".npz", ".txt")},
        "missing sinogram name": {**npz(good), "sinogram_key": "data", **post},
        "missing angles": {**npz({"sinogram": good["sinogram"]}), **post},
        "angle count": {**npz({**good, "angles": np.arange(5.0)}), **post},
        "nan": {**npz({**good, "sinogram": np.full((6, 16), np.nan)}), **post},
        "ndim": {**npz({**good, "sinogram": np.ones(16)}), **post},
        "flat shape": {**npz({**good, "flat": np.ones(15)}), "measurement": "transmission", "center": None, "size": 16},
        "slice": {"slice": 2},
        "radians": {**npz(good), **post, "angle_units": "radians"},
        "center": {"center": 700},
        "reference": {"reference": "gt"},
        "no file": {"sinogram": None},
        "npy angles": {"sinogram": str(write(tmp_path / "s.npy", good)), "angles_key": "theta", **post},
        "fan distances": {**npz(good), **post, "geometry": "fan"},
    }
    return cases[case]


NAMED = {
    "missing file": "task.sinogram",
    "wrong suffix": "task.sinogram",
    "missing sinogram name": "task.sinogram_key",
    "missing angles": "task.angles_key",
    "angle count": "task.angles_key",
    "nan": "NaN or Inf",
    "ndim": "task.sinogram_key",
    "flat shape": "task.flat_key",
    "slice": "task.slice",
    "radians": "task.angle_units",
    "center": "task.center",
    "reference": "task.reference",
    "npy angles": "task.angles_key",
    "fan distances": "task.source_origin",
}


@pytest.mark.parametrize("case", list(NAMED))
def test_bad_input_is_one_line_naming_the_option(tmp_path, case):
    with pytest.raises(UserError) as error:
        tooth(views=4, **bad_file(tmp_path, case))
    message = str(error.value)
    assert "\n" not in message and NAMED[case] in message, message


def test_missing_name_lists_the_arrays(tmp_path):
    path = write(tmp_path / "m_v5.mat", {"CtData.sinogram": np.ones((4, 16)), "CtData.angles": np.arange(4.0)})
    with pytest.raises(UserError, match=r"holds: CtData\.angles, CtData\.sinogram"):
        tooth(sinogram=str(path), sinogram_key="CtData.data", measurement="post_log", center=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="astra_cuda needs a CUDA GPU")
def test_fan_beam_on_the_gpu_matches_the_cpu():
    """ODL hands ASTRA's CUDA projector the fan beam as a one-row cone_vec geometry: the same projection."""
    geometry = measured_geometry(np.deg2rad(np.arange(0, 360, 6.0)), 48, 0.2, 1.5, **FAN)
    cpu, gpu = (measured_transform(32, 3.5, geometry, impl) for impl in ("astra_cpu", "astra_cuda"))
    x = torch.from_numpy(random_ellipses(32, 0))[None, None]
    relative = (gpu(x.cuda()).cpu() - cpu(x)).norm() / cpu(x).norm()
    assert relative < 2e-2 and adjointness_error(gpu) < 1e-2


def test_torch_projector_on_the_tooth_matches_astra():
    """task.impl=torch (parallel beam): the same measurement and nearly the same FBP as astra_cpu."""
    astra, torch_impl = (tooth(views=20, impl=impl) for impl in ("astra_cpu", "torch"))
    assert torch.allclose(astra.y, torch_impl.y, rtol=1e-2, atol=1e-4 * astra.y.abs().max())
    assert psnr(torch_impl.baseline_fbp.clamp(0, 1), astra.baseline_fbp.clamp(0, 1)) > 35

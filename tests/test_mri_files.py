"""Measured MRI k-space without a ground truth: undersampled-only fastMRI files, BART .cfl/.hdr pairs, .npy/.npz
arrays, mask and coil-map files; end-to-end runs and their outputs; bad files stop with one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from untrained.errors import UserError
from untrained.operators.generators.masks import column_mask
from untrained.operators.mri import fft2c, ifft2c
from untrained.run import build_module
from untrained.tasks.kspace_files import parse_axes, read_cfl, write_cfl
from untrained.tasks.mri import simulate_coil_images
from untrained.train import train

SIZE, COILS = 48, 4
# 12 centre columns of 48 (ESPIRiT's calibration), every 4th column beyond them
MRI = ["task=mri", "task.size=null", "task.cg_iterations=2", "task.l1_iterations=5", "task.tv_max_iterations=5"]
STEPS = ["trainer.max_steps=10", "module.log_every=5"]


def acquisition(seed: int = 0):
    """Undersampled k-space (C, H, W) of the phantom under birdcage maps, its column mask (W,) and the true maps."""
    x, maps = simulate_coil_images("shepp_logan_phantom", SIZE, COILS, 1.0)
    columns = column_mask("equispaced", SIZE, 4, 0.25, seed, 2.0)
    return (fft2c(maps * x) * columns).numpy(), columns.numpy(), maps.numpy()


def bart_layout(array: np.ndarray) -> np.ndarray:
    """(C, kx, ky) → BART's (kx, ky, kz = 1, coils)."""
    return np.transpose(array, (1, 2, 0))[:, :, None, :]


def undersampled_fastmri(path: Path, kspace, columns, slices: int = 2) -> str:
    """A challenge/test-style file: zero-filled k-space, a `mask` dataset, no reconstruction_rss."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=np.stack([kspace] * slices))
        f.create_dataset("mask", data=columns.astype(bool))
    return str(path)


def check_outputs(out: Path, metrics: dict, scale_shape) -> None:
    assert metrics["status"] == "completed" and not [k for k in metrics if "psnr" in k or "ssim" in k]
    assert "final_nmse" not in metrics and metrics["reconstruction_residual"] > 0
    assert metrics["task_info"]["sampling"] == "measured" and not metrics["task_info"]["ground_truth"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["reconstruction_residual"] == pytest.approx(metrics["reconstruction_residual"])
    image = np.load(out / "reconstruction_complex.npy")
    assert image.dtype == np.complex64 and image.shape == scale_shape
    # in the data's scale: the network-space reconstruction times info['scale']
    channels = np.load(out / "reconstruction.npy")
    scale = metrics["task_info"]["scale"]
    assert np.allclose(image, (channels[0] + 1j * channels[1]) * scale, rtol=1e-5, atol=1e-6 * scale)
    assert (out / "reconstruction.png").is_file() and (out / "curves.png").is_file()
    assert not (out / "ground_truth.png").exists() and not (out / "best.npy").exists()


def test_cfl_roundtrip_is_bart_layout(tmp_path):
    array = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 1, 4).astype(np.complex64)
    write_cfl(tmp_path / "x", array)
    assert (tmp_path / "x.hdr").read_text().splitlines() == ["# Dimensions", "2 3 1 4 "]
    raw = np.fromfile(tmp_path / "x.cfl", dtype="<c8")
    assert raw[1] == array[1, 0, 0, 0]  # column-major: the first axis varies fastest
    for name in ("x", "x.cfl", "x.hdr"):
        assert np.array_equal(read_cfl(tmp_path / name, "test"), array)
    (tmp_path / "x.hdr").write_text("# Dimensions\n2 3 1 4" + " 1" * 12 + " \n")  # as BART writes it: 16 dims
    assert np.array_equal(read_cfl(tmp_path / "x", "test"), array)


def test_cfl_kspace_runs_end_to_end_without_ground_truth(tmp_path):
    kspace, _, _ = acquisition()
    write_cfl(tmp_path / "ksp", bart_layout(kspace))
    out = tmp_path / "run"
    metrics = train(compose_config([*MRI, f"task.file={tmp_path / 'ksp.cfl'}", *STEPS], out))
    check_outputs(out, metrics, (SIZE, SIZE))
    info = metrics["task_info"]
    assert info["center_fraction"] == pytest.approx(12 / SIZE) and info["mask"] == "the columns holding data"


def test_nifti_export_of_the_magnitude(tmp_path):
    nibabel = pytest.importorskip("nibabel")  # the optional [io] extra
    kspace, _, _ = acquisition()
    np.save(tmp_path / "k.npy", kspace)
    out = tmp_path / "run"
    train(compose_config([*MRI, f"task.file={tmp_path / 'k.npy'}", "trainer.max_steps=2"], out))
    volume = nibabel.load(out / "reconstruction.nii.gz").get_fdata()
    assert volume.shape == (SIZE, SIZE, 1)
    assert np.allclose(volume[..., 0], np.abs(np.load(out / "reconstruction_complex.npy")), rtol=1e-5, atol=1e-7)


ISMRMRD_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>{n}</x><y>{n}</y><z>1</z></matrixSize></encodedSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{last}</maximum><center>{centre}</center>
</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"""


def test_ismrmrd_raw_data_is_read_line_by_line(tmp_path):
    ismrmrd = pytest.importorskip("ismrmrd")  # the optional [io] extra
    kspace, columns, _ = acquisition()
    path = tmp_path / "raw.h5"
    centre = SIZE // 2 + 4  # the header's centre line: line j of the task's k-space is encoding step j + 4
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(ISMRMRD_HEADER.format(n=SIZE, last=SIZE + 3, centre=centre).encode())
        noise = ismrmrd.Acquisition.from_array(np.ones((COILS, SIZE), np.complex64) * 99)
        noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dataset.append_acquisition(noise)
        for j in np.flatnonzero(columns)[::-1]:
            reverse = j % 3 == 0
            line = kspace[:, ::-1, j] if reverse else kspace[:, :, j]
            acquisition_ = ismrmrd.Acquisition.from_array(np.ascontiguousarray(line))
            acquisition_.idx.kspace_encode_step_1 = int(j) + 4
            if reverse:
                acquisition_.set_flag(ismrmrd.ACQ_IS_REVERSE)
            dataset.append_acquisition(acquisition_)
    problem = build_module(compose_config([*MRI, f"task.file={path}"])).problem
    assert problem.info["source"] == "ismrmrd" and problem.x_true is None
    assert torch.equal(problem.operator.mask[0], torch.from_numpy(columns))
    assert torch.allclose(problem.y[0] * problem.info["scale"], torch.from_numpy(kspace), atol=1e-4)
    with pytest.raises(UserError, match="task.slice=3 is out of range"):
        build_module(compose_config([*MRI, f"task.file={path}", "task.slice=3"]))


def test_ismrmrd_without_its_reader_says_how_to_install_it(tmp_path):
    if importlib.util.find_spec("ismrmrd") is not None:
        pytest.skip("ismrmrd is installed")
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f.create_group("dataset").create_dataset("data", data=np.zeros(2))
    with pytest.raises(UserError, match=r"ISMRMRD raw data: install its reader \(pip install -e \"\.\[io\]\"\)"):
        build_module(compose_config([*MRI, f"task.file={tmp_path / 'raw.h5'}"]))


def test_undersampled_fastmri_file_runs_with_its_own_mask(tmp_path):
    kspace, columns, _ = acquisition()
    file = undersampled_fastmri(tmp_path / "test.h5", kspace, columns)
    out = tmp_path / "run"
    # task.size crops the readout only (exact on column-undersampled data); the phase axis keeps its 48 columns
    metrics = train(compose_config([*MRI, f"task.file={file}", "task.size=32", "task.slice=1", *STEPS], out))
    check_outputs(out, metrics, (32, SIZE))
    info = metrics["task_info"]
    assert info["source"] == "fastmri (undersampled)" and info["sampled_fraction"] == pytest.approx(columns.mean())
    assert info["center_fraction"] == pytest.approx(12 / SIZE)


def test_readout_crop_keeps_the_sampling_pattern():
    kspace, columns, _ = acquisition()
    cropped = fft2c(ifft2c(torch.from_numpy(kspace))[:, 8:40])
    sampled = cropped.abs().sum(dim=(0, 1)) > 1e-4 * cropped.abs().max()
    assert torch.equal(sampled, torch.from_numpy(columns > 0))


@pytest.mark.parametrize("axes", ["[coil,readout,phase]", "[coil,ky,kx]", "[ky,coil,kx]"])
def test_npy_axis_orders_give_the_same_problem(axes, tmp_path):
    kspace, columns, _ = acquisition()
    order = parse_axes(axes.strip("[]"))  # task.axes also takes one string
    stored = np.transpose(kspace, np.argsort(order))  # the file's axes as task.axes names them
    assert np.array_equal(np.transpose(stored, order), kspace)
    np.save(tmp_path / "k.npy", stored)
    cfg = compose_config([*MRI, f"task.file={tmp_path / 'k.npy'}", f"task.axes={axes}"])
    problem = build_module(cfg).problem
    assert torch.allclose(problem.y[0] * problem.info["scale"], torch.from_numpy(kspace), atol=1e-4)
    assert torch.equal(problem.operator.mask[0], torch.from_numpy(columns))


def test_npz_with_mask_and_a_maps_file(tmp_path):
    kspace, columns, maps = acquisition()
    noisy = kspace + (columns == 0) * 0.5  # data in the unsampled columns: the mask, not the data, decides
    np.savez(tmp_path / "k.npz", kspace=noisy, mask=columns)
    write_cfl(tmp_path / "maps", bart_layout(maps)[..., None])
    cfg = compose_config([*MRI, f"task.file={tmp_path / 'k.npz'}", f"task.maps={tmp_path / 'maps.cfl'}"])
    problem = build_module(cfg).problem
    assert torch.equal(problem.operator.mask[0], torch.from_numpy(columns))
    assert torch.allclose(problem.operator.maps, torch.from_numpy(maps))
    np.save(tmp_path / "mask.npy", columns[None])
    np.save(tmp_path / "maps.npy", np.transpose(maps, (1, 2, 0)))
    overrides = [f"task.mask_path={tmp_path / 'mask.npy'}", f"task.maps={tmp_path / 'maps.npy'}"]
    np.save(tmp_path / "k.npy", noisy)
    cfg = compose_config([*MRI, f"task.file={tmp_path / 'k.npy'}", *overrides, "task.axes=[readout,phase,coil]"])
    with pytest.raises(UserError, match="task.maps"):  # the k-space file is (C, H, W), not in task.axes' order
        build_module(cfg)
    cfg = compose_config([*MRI, f"task.file={tmp_path / 'k.npy'}", *overrides])
    with pytest.raises(UserError, match="task.maps"):  # the maps are (H, W, C), not in task.axes' order
        build_module(cfg)


def bad_files(tmp: Path) -> dict:
    kspace, columns, _ = acquisition()
    nan = kspace.copy()
    nan[1, 2, 3] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "k.npy", kspace)
    np.save(tmp / "k4.npy", kspace[None])
    (tmp / "k.txt").write_text("not k-space")
    np.save(tmp / "mask_wrong.npy", np.ones(30))
    np.save(tmp / "mask_zero.npy", np.zeros(SIZE))
    np.savez(tmp / "other.npz", data=kspace, extra=columns)
    write_cfl(tmp / "k3d", np.zeros((8, 8, 2, 4), np.complex64))
    write_cfl(tmp / "short", bart_layout(kspace))
    (tmp / "short.cfl").write_bytes((tmp / "short.cfl").read_bytes()[:100])
    (tmp / "nodims.hdr").write_text("# Dimensions\n")
    (tmp / "nodims.cfl").write_bytes(b"")
    with h5py.File(tmp / "nokspace.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 8, 8)))
    undersampled_fastmri(tmp / "u.h5", kspace, columns)
    with h5py.File(tmp / "badmask.h5", "w") as f:
        f.create_dataset("kspace", data=kspace[None])
        f.create_dataset("mask", data=np.ones(7, bool))
    narrow = column_mask("equispaced", SIZE, 4, 0.02, 0, 2.0).numpy()
    np.save(tmp / "narrow.npy", kspace * narrow)
    np.save(tmp / "narrow_mask.npy", narrow)
    return {
        "missing": (["task.file=/nonexistent/k.cfl"], "does not exist"),
        "suffix": ([f"task.file={tmp / 'k.txt'}"], "has suffix '.txt'"),
        "nan": ([f"task.file={tmp / 'nan.npy'}"], "NaN or Inf"),
        "4d": ([f"task.file={tmp / 'k4.npy'}"], "expected 2D or 3D"),
        "3d-bart": ([f"task.file={tmp / 'k3d.cfl'}"], "kz = 1"),
        "short-cfl": ([f"task.file={tmp / 'short.cfl'}"], "bytes"),
        "no-dims": ([f"task.file={tmp / 'nodims.hdr'}"], "no dimensions"),
        "npz-keys": ([f"task.file={tmp / 'other.npz'}"], "'data', 'extra'"),
        "h5-datasets": ([f"task.file={tmp / 'nokspace.h5'}"], "reconstruction_rss"),
        "axes": ([f"task.file={tmp / 'k.npy'}", "task.axes=[coil,coil,kx]"], "task.axes"),
        "axes-names": ([f"task.file={tmp / 'k.npy'}", "task.axes=[c,x,y]"], "task.axes"),
        "mask-shape": (
            [f"task.file={tmp / 'k.npy'}", f"task.mask_path={tmp / 'mask_wrong.npy'}"],
            "(48,) or a (48, 48)",
        ),
        "mask-zero": ([f"task.file={tmp / 'k.npy'}", f"task.mask_path={tmp / 'mask_zero.npy'}"], "samples nothing"),
        "mask-missing": ([f"task.file={tmp / 'k.npy'}", "task.mask_path=/nonexistent/m.npy"], "task.mask_path="),
        "fastmri-mask-shape": ([f"task.file={tmp / 'badmask.h5'}"], "task.file"),
        "maps-missing": ([f"task.file={tmp / 'u.h5'}", "task.maps=/nonexistent/maps.npy"], "task.maps="),
        "maps-shape": ([f"task.file={tmp / 'u.h5'}", f"task.maps={tmp / 'mask_wrong.npy'}"], "task.maps"),
        "maps-given": ([f"task.file={tmp / 'k.npy'}", "task.maps=given"], "task.maps=<maps file>"),
        "no-centre": (
            [f"task.file={tmp / 'narrow.npy'}", f"task.mask_path={tmp / 'narrow_mask.npy'}"],
            "fully sampled centre",
        ),
        "readout-larger": ([f"task.file={tmp / 'k.npy'}", "task.size=64"], "readout"),
    }


CASES = [
    "missing",
    "suffix",
    "nan",
    "4d",
    "3d-bart",
    "short-cfl",
    "no-dims",
    "npz-keys",
    "h5-datasets",
    "axes",
    "axes-names",
    "mask-shape",
    "mask-zero",
    "mask-missing",
    "fastmri-mask-shape",
    "maps-missing",
    "maps-shape",
    "maps-given",
    "no-centre",
    "readout-larger",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_kspace_files_stop_with_one_line(case, tmp_path):
    options, fragment = bad_files(tmp_path)[case]
    with pytest.raises(UserError) as error:
        build_module(compose_config([*MRI, *options]))
    message = str(error.value)
    assert "\n" not in message and fragment in message, message

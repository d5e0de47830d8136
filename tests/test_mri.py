"""Multi-coil MRI: SENSE operator, masks, ESPIRiT, fastMRI HDF5 loading, baselines and a short DIP run."""

from __future__ import annotations

import fastmri
import h5py
import numpy as np
import pytest
import torch
from fastmri.data.transforms import center_crop as fastmri_center_crop

from untrained.errors import UserError
from untrained.operators.base import adjointness_error, conjugate_gradient, euclidean_norm, mean_squared_magnitude
from untrained.operators.generators.coils import birdcage_maps, calibration_region, espirit_maps
from untrained.operators.generators.masks import column_mask
from untrained.operators.mri import MultiCoilMRI, fft2c, ifft2c
from untrained.tasks.mri import mri, simulate_coil_images
from untrained.train import train

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></encodedSpace>
<reconSpace><matrixSize><x>32</x><y>32</y><z>1</z></matrixSize></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{wmax}</maximum><center>{wc}</center>
</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"""


def random_operator(shape=(33, 30), coils=4, seed=0) -> MultiCoilMRI:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(coils, *shape, dtype=torch.complex64, generator=g)
    mask = (torch.rand(shape[1], generator=g) < 0.4).float().expand(*shape).clone()
    return MultiCoilMRI(maps, mask)


# Operator ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32, 32), (34, 32), (33, 30)])
def test_centered_fft_is_fastmris(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.complex64)
    assert torch.allclose(fft2c(x), torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x))), atol=1e-6)
    assert torch.allclose(ifft2c(x), torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(x))), atol=1e-6)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 32), (34, 32), (33, 30)])
def test_sense_operator_is_adjoint_float32(shape):
    assert adjointness_error(random_operator(shape)) < 1e-4


def test_operator_shape_errors():
    op = random_operator()
    with pytest.raises(ValueError, match="expects inputs of shape"):
        op(torch.zeros(1, 32, 30, dtype=torch.complex64))
    with pytest.raises(ValueError, match="expects k-space of shape"):
        op.adjoint(torch.zeros(1, 3, 33, 30, dtype=torch.complex64))
    with pytest.raises(UserError, match="mask has shape"):
        MultiCoilMRI(op.maps, torch.ones(33, 31))
    with pytest.raises(UserError, match="coils, H, W"):
        MultiCoilMRI(op.maps[0], torch.ones(33, 30))


def test_conjugate_gradient_solves_normal_equations():
    op = random_operator((17, 16))
    x = torch.randn(1, 17, 16, dtype=torch.complex64)
    rhs = op.normal(x)
    solution, _ = conjugate_gradient(op.normal, rhs, 100, tol=1e-6, relative=True)
    assert torch.linalg.vector_norm(op.normal(solution) - rhs) < 1e-4 * torch.linalg.vector_norm(rhs)


# Masks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "equispaced", "equispaced_fraction", "variable_density"])
@pytest.mark.parametrize("acceleration,center", [(4, 0.08), (8, 0.04)])
def test_masks_are_seeded_and_keep_the_centre(kind, acceleration, center):
    cols = 368
    mask = column_mask(kind, cols, acceleration, center, seed=3)
    assert torch.equal(mask, column_mask(kind, cols, acceleration, center, seed=3))
    low = round(cols * center)
    start = (cols - low + 1) // 2
    assert mask[start : start + low].all()  # fastMRI's fully sampled centre
    assert abs(float(mask.mean()) - 1 / acceleration) < 0.06
    if kind != "equispaced":
        others = [column_mask(kind, cols, acceleration, center, seed=s) for s in range(4, 8)]
        assert any(not torch.equal(mask, other) for other in others)


def test_unknown_mask_is_a_user_error():
    with pytest.raises(UserError, match="Unknown task.mask"):
        column_mask("spiral", 64, 4, 0.08, 0)


# ESPIRiT -------------------------------------------------------------------------------------------
def test_espirit_maps_reproduce_fully_sampled_coil_images():
    """ESPIRiT from a 24×24 centre: projecting the coil images onto the estimated maps, S S^H x_c, keeps
    them within 1% (measured 0.5% at 64 px, 8 coils) and the top eigenvalue is ≈ 1 on the object."""
    x, true_maps = simulate_coil_images("shepp_logan_phantom", 64, 8, phase=1.0)
    coil_images = true_maps * x
    columns = torch.zeros(64)
    columns[20:44] = 1
    maps, eigenvalue = espirit_maps(calibration_region(fft2c(coil_images), columns, 24), (64, 64))
    projected = maps * torch.sum(maps.conj() * coil_images, dim=0)
    error = torch.linalg.vector_norm(projected - coil_images) / torch.linalg.vector_norm(coil_images)
    assert error < 0.01
    on_object = x.abs() > 0
    assert eigenvalue[on_object].mean() > 0.99
    # Maps agree with the true ones up to a per-pixel phase, and are normalised like them.
    agreement = torch.sum(maps.conj() * true_maps, dim=0).abs()[on_object]
    assert agreement.mean() > 0.99


def test_birdcage_maps_are_normalised():
    maps = birdcage_maps(12, (40, 48))
    assert torch.allclose(torch.sum(maps.abs() ** 2, dim=0), torch.ones(40, 48), atol=1e-5)


# Task: simulation ----------------------------------------------------------------------------------
def test_simulated_task_scale_baselines_and_representation():
    problem = mri(size=64, coils=8, noise=0.01, cg_iterations=10)
    assert problem.image_shape == (2, 64, 64) and problem.y.shape == (1, 8, 64, 64)
    assert adjointness_error(problem.operator) < 1e-4
    zero_filled = problem.baselines()["zero_filled"]
    assert torch.equal(zero_filled, problem.init)
    assert abs(float(torch.linalg.vector_norm(zero_filled, dim=1).max()) - 1) < 1e-5  # scaled to max |x| = 1
    assert problem.data_range == pytest.approx(float(problem.display(problem.x_true).max()))
    assert problem.psnr(problem.baselines()["cg_sense"]) > problem.psnr(zero_filled) + 2
    z = torch.complex(torch.randn(1, 64, 64), torch.randn(1, 64, 64))
    assert torch.equal(problem.to_domain(problem.from_domain(z)), z)
    again = mri(size=64, coils=8, noise=0.01, cg_iterations=10)
    assert torch.equal(problem.y, again.y)


def test_true_maps_option_and_option_errors():
    problem = mri(size=32, coils=4, maps="given", noise=0.0)
    assert torch.equal(problem.operator.maps, birdcage_maps(4, (32, 32)))
    x, _ = simulate_coil_images("shepp_logan_phantom", 32, 4, phase=1.0)
    scaled = problem.from_domain(x[None] / problem.info["scale"])
    assert problem.data_loss(scaled) < 1e-10 < problem.data_loss(problem.init)  # y = A x exactly without noise
    with pytest.raises(UserError, match="task.maps"):
        mri(size=32, coils=4, maps="bart")
    with pytest.raises(UserError, match="task.noise"):
        mri(size=32, coils=4, noise=-1)
    with pytest.raises(UserError, match="task.espirit"):
        mri(size=32, coils=4, espirit={"kernel": 5})
    with pytest.raises(UserError, match="ESPIRiT needs at least 3"):
        mri(size=32, coils=4, mask="equispaced", acceleration=8, center_fraction=0.01)


# Task: fastMRI files -------------------------------------------------------------------------------
@pytest.fixture
def fastmri_file(tmp_path):
    """A 3-slice, 4-coil multi-coil file in the fastMRI layout, raw k-space 48×40, RSS target 32×32."""
    height, width = 48, 40
    kspace = []
    for s in range(3):
        x, maps = simulate_coil_images("shepp_logan_phantom", [height, width], 4, phase=0.5)
        kspace.append(fft2c(maps * x * (1 + s)).numpy())
    kspace = np.stack(kspace).astype(np.complex64)
    images = fastmri.ifft2c(torch.view_as_real(torch.from_numpy(kspace)))  # fastMRI's own pipeline
    target = fastmri_center_crop(fastmri.rss_complex(images, dim=1), (32, 32)).numpy()
    path = tmp_path / "file_brain_test.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=target)
        f.create_dataset(
            "ismrmrd_header", data=HEADER.format(h=height, w=width, wmax=width - 1, wc=width // 2).encode()
        )
        f.attrs["acquisition"] = "AXT2"
        f.attrs["max"] = float(target.max())
    return path


def test_fastmri_layout_is_read_by_fastmri_and_by_the_loader(fastmri_file, tmp_path):
    from fastmri.data import SliceDataset

    dataset = SliceDataset(fastmri_file.parent, "multicoil", dataset_cache_file=tmp_path / "cache.pkl")
    kspace, _, target, attrs, _, _ = dataset[1]
    assert kspace.shape == (4, 48, 40) and attrs["recon_size"] == (32, 32, 1)

    problem = mri(file=str(fastmri_file), slice=1, size=32, mask="equispaced", center_fraction=0.25)
    scale = problem.info["scale"]
    assert problem.info["slices"] == 3 and problem.info["encodedSpace"] == [48, 40]
    assert problem.info["reconSpace"] == [32, 32] and problem.info["acquisition"] == "AXT2"
    truth = problem.x_true[0, 0] * scale  # the ground truth is the RSS of the fully sampled data, cropped
    assert torch.allclose(truth, torch.from_numpy(target), rtol=1e-4, atol=1e-4 * float(target.max()))
    assert torch.all(problem.x_true[0, 1] == 0) and problem.y.shape == (1, 4, 32, 32)
    assert problem.psnr(problem.baselines()["cg_sense"]) > problem.psnr(problem.baselines()["zero_filled"])
    raw = mri(file=str(fastmri_file), slice=0, size=None, center_fraction=0.25)
    assert raw.image_shape == (2, 48, 40)


def test_fastmri_given_maps(fastmri_file):
    with pytest.raises(UserError, match="no 'sens_maps'"):
        mri(file=str(fastmri_file), size=32, maps="given")
    maps = birdcage_maps(4, (48, 40)).numpy()
    with h5py.File(fastmri_file, "a") as f:
        f.create_dataset("sens_maps", data=np.stack([maps] * 3))
    problem = mri(file=str(fastmri_file), size=32, maps="given")
    assert torch.allclose(problem.operator.maps, torch.from_numpy(maps)[:, 8:40, 4:36])


@pytest.mark.parametrize(
    "options,message",
    [
        ({"slice": 3}, "out of range"),
        ({"slice": -1}, "out of range"),
        ({"size": 64}, "does not fit"),
        ({"mask": "radial"}, "Unknown task.mask"),
    ],
)
def test_fastmri_user_errors(fastmri_file, options, message):
    with pytest.raises(UserError, match=message):
        mri(file=str(fastmri_file), **{"size": 32, **options})


def test_file_errors(tmp_path):
    no_kspace = tmp_path / "no_kspace.h5"
    with h5py.File(no_kspace, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 8, 8), np.float32))
    with pytest.raises(UserError, match="no 'kspace' dataset"):
        mri(file=str(no_kspace))
    with pytest.raises(UserError, match="does not exist"):
        mri(file=str(tmp_path / "missing.h5"))
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("not hdf5")
    with pytest.raises(UserError, match="Cannot read"):
        mri(file=str(not_hdf5))


# End to end ----------------------------------------------------------------------------------------
def test_short_dip_run_beats_zero_filled(make_cfg, tmp_path):
    cfg = make_cfg(["task=mri", "task.size=64", "task.coils=8", "trainer.max_steps=150", "module.log_every=50"])
    assert cfg.network.sigmoid is False  # conf/network_task/skip_mri.yaml: real/imaginary parts can be negative
    metrics = train(cfg)
    assert metrics["status"] == "completed"
    assert metrics["best_psnr"] > metrics["baseline_zero_filled_psnr"] + 0.5
    assert np.load(tmp_path / "run" / "best.npy").shape == (2, 64, 64)
    assert (tmp_path / "run" / "baseline_cg_sense.png").is_file()


def test_kspace_losses_through_the_real_view_equal_the_complex_forms():
    """The losses on complex k-space residuals (computed through the real view, for speed) give the values
    and gradients of mean(|r|²) and torch.linalg.vector_norm on the complex tensor."""
    residual = torch.randn(1, 4, 8, 6, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    for fast, reference in (
        (mean_squared_magnitude, lambda r: (r.abs() ** 2).mean()),
        (euclidean_norm, torch.linalg.vector_norm),
    ):
        values, grads = [], []
        for loss in (fast, reference):
            r = residual.clone().requires_grad_()
            value = loss(r)
            value.backward()
            values.append(value.detach())
            grads.append(r.grad)
        torch.testing.assert_close(values[0], values[1])
        torch.testing.assert_close(grads[0], grads[1])


def test_two_coil_kspace_is_not_drawn_as_an_image(make_cfg, tmp_path):
    """Two coils give k-space of the image's shape (2, H, W): it is complex data, not an image to draw."""
    metrics = train(make_cfg(["task=mri", "task.coils=2", "trainer.max_steps=2", "task.l1_iterations=2"]))
    assert metrics["status"] == "completed"
    run = tmp_path / "run"
    assert (run / "measurement.npy").is_file() and not (run / "measurement.png").exists()

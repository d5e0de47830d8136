"""Sparse-view CT: adjoint-tested ray transform, DICOM/npy loading, noise, baselines, DIP beats FBP."""

from pathlib import Path

import numpy as np
import pytest
import torch

from untrained.errors import UserError
from untrained.operators.base import adjointness_error, operator_norm
from untrained.operators.ct import RayTransform, TorchRayTransform, default_impl, view_angles
from untrained.operators.generators.phantoms import MU_MAX, random_ellipses
from untrained.tasks.ct import ct, dicom_series, hounsfield_to_normalised, load_ct_image
from untrained.train import train


@pytest.fixture(scope="module")
def operator():
    return RayTransform(32, 12, impl="astra_cpu")


def test_ray_transform_is_adjoint_and_normalised(operator):
    assert adjointness_error(operator) < 1e-4
    assert abs(operator_norm(operator) - 1) < 1e-3
    assert operator.range_shape[:2] == (1, 12) and operator.norm > 0


def test_autograd_gradient_is_the_backprojection(operator):
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    weights = torch.randn(2, *operator.range_shape)
    (operator(x) * weights).sum().backward()
    assert torch.allclose(x.grad, operator.adjoint(weights), atol=1e-5)


def test_torch_backed_projection_matches_odl_numpy_path(operator):
    """The operator runs ODL on torch tensors (no host copies with astra_cuda); it must give ODL's own
    NumPy-path projection, backprojection and FBP."""
    import odl
    from odl.applications import tomo

    space = odl.uniform_discr([-1, -1], [1, 1], (32, 32), dtype="float32")
    reference = tomo.RayTransform(space, operator.odl_op.geometry, impl="astra_cpu")
    assert operator.space.impl == "pytorch"
    x = torch.rand(2, 1, 32, 32)
    sinograms = np.stack([reference(image[0].numpy()).asarray() for image in x])
    assert np.allclose(operator(x)[:, 0].numpy(), sinograms * operator.scale, atol=1e-6)
    y = torch.from_numpy(sinograms[:, None])
    backprojections = np.stack([reference.adjoint(s).asarray() for s in sinograms])
    expected = backprojections * operator.scale * operator.adjoint_scale
    assert np.allclose(operator.adjoint(y)[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    fbp = tomo.fbp_op(reference, filter_type="Hann")
    fbps = np.stack([fbp(s).asarray() for s in sinograms])
    assert np.allclose(operator.fbp(y * operator.scale)[:, 0].numpy(), fbps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("selection", ["equispaced", "random"])
def test_torch_ray_transform_matches_astra(selection):
    """task.impl=torch is ASTRA's CPU projector as a sparse matrix: on an ellipse phantom, projection,
    backprojection and FBP agree with astra_cpu's to float rounding (measured ≤ 1e-5 relative), and its
    adjoint is exactly the transpose."""
    astra, torch_op = RayTransform(40, 12, selection, seed=2, impl="astra_cpu"), TorchRayTransform(40, 12, selection, 2)
    assert torch_op.capturable and not astra.capturable
    assert torch_op.range_shape == astra.range_shape and abs(torch_op.norm / astra.norm - 1) < 1e-5
    x = torch.from_numpy(random_ellipses(40, 1))[None, None]

    def relative(a, b):
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    y = astra(x)
    assert relative(torch_op(x), y) < 1e-4
    assert relative(torch_op.adjoint(y), astra.adjoint(y)) < 1e-4
    for name, scaling in [("Hann", 0.85), ("Ram-Lak", 1.0), ("Shepp-Logan", 0.9), ("Cosine", 1.0)]:
        assert relative(torch_op.fbp(y, name, scaling), astra.fbp(y, name, scaling)) < 1e-4, name
    assert adjointness_error(torch_op) < 1e-5
    assert abs(operator_norm(torch_op) - 1) < 1e-4


def test_torch_ray_transform_gradient_and_vmap():
    """Autograd's gradient is the backprojection; vmap over stacked batches equals one call on their
    concatenation (the batched fits map the operator this way)."""
    op = TorchRayTransform(32, 8)
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    weights = torch.randn(2, *op.range_shape)
    (op(x) * weights).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(weights), atol=1e-6)
    stacked = torch.rand(3, 2, 1, 32, 32, requires_grad=True)
    mapped = torch.func.vmap(op)(stacked)
    assert torch.allclose(mapped, op(stacked.reshape(6, 1, 32, 32)).reshape(3, 2, *op.range_shape), atol=1e-6)
    mapped.square().sum().backward()
    expected = 2 * op.adjoint(op(stacked.detach().reshape(6, 1, 32, 32)))
    assert torch.allclose(stacked.grad.reshape(6, 1, 32, 32), expected, atol=1e-5)
    assert torch.allclose(op.double().adjoint(weights.double()), op.adjoint(weights), atol=1e-5)


def test_impl_choice():
    assert default_impl("torch") == "torch" and default_impl("astra_cpu") == "astra_cpu"
    assert default_impl("auto") == "torch"
    assert default_impl(None) == ("astra_cuda" if torch.cuda.is_available() else "astra_cpu")
    with pytest.raises(UserError, match="task.impl"):
        default_impl("gpu")


def test_torch_impl_end_to_end(make_cfg):
    """task.impl=torch: the same baselines as astra_cpu (FBP within 0.05 dB) and a DIP run through it."""
    clean = {impl: ct(size=32, views=12, tv_max_iterations=0, impl=impl) for impl in ("astra_cpu", "torch")}
    fbp = {impl: float(problem.psnr(problem.baseline_fbp)) for impl, problem in clean.items()}
    assert abs(fbp["torch"] - fbp["astra_cpu"]) < 0.05, fbp
    overrides = ["task=ct", "task.size=32", "task.views=12", "task.impl=torch", "trainer.max_steps=30"]
    metrics = train(make_cfg(overrides + ["task.tv_max_iterations=5"]))
    assert metrics["status"] == "completed" and metrics["task_info"]["impl"] == "torch", metrics["task_info"]
    assert metrics["best_psnr"] > 10


def test_batched_ct_vmaps_the_torch_ray_transform(make_cfg):
    """batching.mode=vmap maps task.impl=torch (its batching rule); the ASTRA operator cannot be mapped: a
    one-line error naming the fixes (auto mode falls back to the loop)."""
    base = ["task=ct", "task.size=32", "task.views=8", "task.tv_max_iterations=5", "trainer.max_steps=4"]
    base += ["batching.size=2", "batching.mode=vmap"]
    metrics = train(make_cfg(base + ["task.impl=torch"], subdir="torch"))
    assert metrics["status"] == "completed" and metrics["performance"]["batch_mode"] == "vmap"
    assert all(np.isfinite(member["best_psnr"]) for member in metrics["members"])
    with pytest.raises(UserError, match="task.impl=torch"):
        train(make_cfg(base + ["task.impl=astra_cpu"], subdir="astra"))


def test_view_selection():
    assert view_angles(18).tolist() == list(range(0, 180, 10))
    random = view_angles(18, "random", seed=3)
    assert len(set(random.tolist())) == 18 and (random == view_angles(18, "random", seed=3)).all()
    with pytest.raises(UserError, match="task.views"):
        view_angles(0)


def test_shape_errors(operator):
    with pytest.raises(ValueError, match="expects inputs of shape"):
        operator(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="sinograms of shape"):
        operator.adjoint(torch.zeros(1, 1, 5, 5))


def write_dicom(path, hu: np.ndarray, z: float) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns = "CT", *hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_dicom_series_by_position_with_hounsfield_conversion(tmp_path):
    for z, value in [(2.0, 1000), (0.0, 0), (1.0, -1000)]:  # bone-ish, water, air; written out of order
        write_dicom(tmp_path / f"slice_{value + 1000}.dcm", np.full((40, 40), value, dtype=np.int16), z)
    (tmp_path / "notes.txt").write_text("not a slice")
    assert len(dicom_series(tmp_path)) == 3
    water = load_ct_image(str(tmp_path), 32, index=0, seed=0)
    air = load_ct_image(str(tmp_path), 32, index=1, seed=0)
    assert water.shape == (32, 32)
    assert np.allclose(water, hounsfield_to_normalised(np.array(0.0)), atol=1e-3)
    assert np.allclose(air, hounsfield_to_normalised(np.array(-1000.0)), atol=1e-3)
    with pytest.raises(UserError, match="past the end"):
        load_ct_image(str(tmp_path), 32, index=3, seed=0)


def test_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.dcm").write_bytes(b"nonsense")
    with pytest.raises(UserError, match="no readable DICOM"):
        load_ct_image(str(tmp_path / "empty"), 32, 0, 0)
    np.save(tmp_path / "stack.npy", np.zeros((2, 40, 40), dtype=np.float32))
    assert load_ct_image(str(tmp_path / "stack.npy"), 32, 1, 0).shape == (32, 32)
    with pytest.raises(UserError, match="past the end"):
        load_ct_image(str(tmp_path / "stack.npy"), 32, 2, 0)
    with pytest.raises(UserError, match="photons"):
        ct(size=32, views=8, photons=-5, tv_max_iterations=0)


def test_ellipse_phantoms_are_seeded():
    assert np.array_equal(random_ellipses(32, 1), random_ellipses(32, 1))
    assert not np.array_equal(random_ellipses(32, 1), random_ellipses(32, 2))


def test_poisson_noise_lowers_fbp_quality():
    clean = ct(size=32, views=12, tv_max_iterations=0)
    noisy = ct(size=32, views=12, photons=300, tv_max_iterations=0)
    assert noisy.psnr(noisy.baseline_fbp) < clean.psnr(clean.baseline_fbp)


def test_dip_beats_fbp(make_cfg):
    metrics = train(
        make_cfg(
            [
                "task=ct",
                "task.size=32",
                "task.views=12",
                "task.tv_max_iterations=20",
                "trainer.max_steps=300",
                "method.lr=0.01",
            ]
        )
    )
    assert metrics["best_psnr"] > metrics["baseline_fbp_psnr"]


def test_dicom_input_gives_a_reconstruction_in_hounsfield_units_and_as_dicom(make_cfg, tmp_path):
    """A run from a DICOM slice writes its reconstruction as attenuation (1/m), in HU and as a DICOM slice that
    keeps the source's geometry (pixel spacing scaled to the reconstruction's size)."""
    import pydicom

    hu = np.full((40, 40), -1000, dtype=np.int16)
    hu[8:32, 8:32] = 0  # a water square in air
    source = tmp_path / "slice.dcm"
    write_dicom(source, hu, 0.0)
    dataset = pydicom.dcmread(source)
    dataset.PixelSpacing, dataset.PatientName = [0.5, 0.5], "Phantom^Water"
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.save_as(source, enforce_file_format=True)
    cfg = make_cfg(["task=ct", f"task.image={source}", "task.views=16", "trainer.max_steps=30", "callbacks=none"])
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    reconstruction = np.load(run_dir / "reconstruction.npy")[0]
    attenuation = np.load(run_dir / "reconstruction_attenuation.npy")
    assert np.allclose(attenuation, reconstruction * MU_MAX, rtol=1e-5)
    hounsfield = np.load(run_dir / "reconstruction_hu.npy")
    written = pydicom.dcmread(run_dir / "reconstruction.dcm")
    assert written.PatientName == "Phantom^Water" and written.SOPInstanceUID != dataset.SOPInstanceUID
    assert (written.Rows, written.Columns) == (32, 32)
    assert np.allclose([float(v) for v in written.PixelSpacing], [0.625, 0.625])
    assert np.array_equal(written.pixel_array * float(written.RescaleSlope), np.round(hounsfield))
    # The water square reads about 0 HU, the air about -1000 HU (30 steps: a rough image).
    assert abs(np.median(hounsfield[12:20, 12:20])) < 250 and np.median(hounsfield[:3, :3]) < -600

"""Bad input stops before training with a one-line UserError that names the option or the file.

Options: every numeric option of every task, network and method config (read from the composed configs, nested
ones such as task.kernel.* and method.input.* included), and the run's own (seed, trainer.max_steps, module.*,
batching.size), is set to a negative, zero, NaN and absurdly large value, and the run is built
(``build_module``: task, network, method and module, no training). A case either builds, when the (option, value)
pair is in ALLOWED with the reason it is valid, or raises UserError with a one-line message naming the option;
any other exception fails. Loaders: small bad files (NaN/Inf, empty, wrong dtype, wrong rank, missing datasets,
wrong shapes) for every kind of input file. The command line: no traceback, exit status 2.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tests.conftest import QUIET_CPU, compose_config
from untrained.errors import UserError
from untrained.run import build_module, check_uncertainty

ROOT = Path(__file__).resolve().parents[1]

# Tiny runs; the baselines' iterations (TV, CG) cut to a few, since every case builds the task again.
BASE = ["task.size=32", *QUIET_CPU]
SKIP = ["network.channels_down=[8,8]", "network.channels_up=[8,8]", "network.channels_skip=[2,2]"]
DRP = ["network.channels_down=[8]", "network.channels_up=[8]", "network.channels_skip=[2]"]
DECODER = ["network.channels=8", "network.blocks=3", "method.input.channels=8"]
ADP = ["task=integration_1d", "network=unrolled_pg", "method=adp"]

# group → (the config section whose options are enumerated, overrides). One group per YAML of conf/task,
# conf/network and conf/method (methods that pin a network get it), plus the run's own options.
GROUPS = {
    "denoising": ("task", ["task=denoising", *SKIP]),
    "deblurring": ("task", ["task=deblurring", "task.tv_max_iterations=2", *SKIP]),
    "nonlinear_deblurring": ("task", ["task=nonlinear_deblurring", "task.tv_max_iterations=2", *SKIP]),
    "semi_blind_deblurring": ("task", ["task=semi_blind_deblurring", "task.tv_max_iterations=2", *SKIP]),
    "inpainting": ("task", ["task=inpainting", *SKIP]),
    "super_resolution": ("task", ["task=super_resolution", *SKIP]),
    "ct": ("task", ["task=ct", "task.tv_max_iterations=2", *SKIP]),
    "ct_measured": (
        "task",
        ["task=ct_measured", "task.sinogram=data/tooth.h5", "task.center=296", "task.detector_binning=20", *SKIP],
    ),
    "mri": ("task", ["task=mri", "task.coils=4", "task.cg_iterations=2", "task.l1_iterations=5", *SKIP]),
    "integration_1d": ("task", ["task=integration_1d", "network.dim=1", *SKIP]),
    "deconvolution_1d": ("task", ["task=deconvolution_1d", "network.dim=1", *SKIP]),
    "network=skip": ("network", SKIP),
    "network=drp": ("network", ["network=drp", *DRP]),
    "network=deep_decoder": ("network", ["method=deep_decoder", *DECODER]),
    "network=unrolled_pg": ("network", ADP),
    **{
        f"method={name}": ("method", [f"method={name}", *SKIP])
        for name in ("vanilla", "tv", "aseqdip", "deepred", "dop", "edip_pretrain", "edip", "oes", "self_guided")
    },
    "method=drp": ("method", ["method=drp", *DRP]),
    "method=deep_decoder": ("method", ["method=deep_decoder", *DECODER]),
    "method=adp": ("method", ADP),
    "run": ("run", SKIP),
    "uncertainty=ensemble": ("uncertainty", ["uncertainty=ensemble", *SKIP]),
    "uncertainty=mc_dropout": ("uncertainty", ["uncertainty=mc_dropout", *SKIP]),
}
RUN_OPTIONS = ("seed", "trainer.max_steps", "module", "performance")

# Options whose default is null (or a word) but that take a number; the type of their bad values.
NUMERIC_WHEN_SET = {
    "task.tv_weight": float,
    "task.noise_level": float,
    "task.gain": float,
    "task.photons": float,
    "task.snr_db": float,
    "task.tsvd_threshold": float,
    "task.slice": int,
    "task.views": int,
    "task.source_origin": float,
    "task.origin_detector": float,
    "task.scan_range": float,
    "task.center": float,
    "task.extent": float,
    "network.step_size": float,
    "method.input_lr": float,
    "method.photons": float,
    "module.steps_per_batch": int,
}
# Null defaults that are not numbers (paths, switches, whole sub-configs).
NOT_NUMERIC = {
    "task.grayscale",
    "task.kernel.path",
    "task.true_kernel",
    "task.mask_path",
    "task.impl",
    "task.file",
    "task.measurement",
    "task.sinogram",
    "task.sinogram_key",
    "task.angles_key",
    "task.flat_key",
    "task.dark_key",
    "method.mask",
    "method.checkpoint",
    "performance.compile_mode",
    "performance.sync_debug",
    "batching.indices",
}

BAD_VALUES = {  # kind → value for an int option, value for a float option
    "negative": (-3, -1.0),
    "zero": (0, 0.0),
    "nan": (math.nan, math.nan),
    "huge": (10**12, 1e12),
}

NOISE_LEVEL = "a noise level has no upper bound: a huge one drowns the image, which the run reports (low PSNR)"
WEIGHT = (
    "a weight or learning rate has no upper bound: a too large one gives a poor image or a non-finite loss, "
    "which ends the run with status failed"
)
IGNORED_INDEX = "task.index is read only for folders and stacks; with a built-in image it is ignored"
# (option, kind) → why the value is valid. Applies in every group that has the option; ("group", option, kind)
# keys apply in that group only. NaN is never valid.
ALLOWED = {
    # the run
    ("seed", "zero"): "seed 0 is a seed",
    ("trainer.max_steps", "huge"): "a long run is valid; early stopping or a signal may end it",
    ("module.eval_every", "huge"): "PSNR only at step 0: the run still fits",
    ("module.log_every", "huge"): "the host reads the metrics at the end only",
    ("module.steps_per_batch", "huge"): "one Lightning batch for the whole run",
    # tasks
    ("task.index", "zero"): "the first image",
    ("task.index", "huge"): IGNORED_INDEX,
    ("task.noise_seed", "zero"): "seed 0 is a seed",
    ("task.mask_seed", "zero"): "seed 0 is a seed",
    ("task.phantom_seed", "zero"): "seed 0 is a seed",
    ("task.sigma", "zero"): "noiseless denoising",
    ("task.sigma", "huge"): NOISE_LEVEL,
    ("task.noise_level", "zero"): "noiseless data",
    ("task.noise_level", "huge"): NOISE_LEVEL,
    ("denoising", "task.noise_level", "huge"): "read by the non-Gaussian models only (the default is Gaussian)",
    ("task.tv_weight", "zero"): "the TV baseline without TV: least squares",
    ("task.tv_weight", "huge"): WEIGHT,
    ("task.tv_max_iterations", "zero"): "the TV baseline is its start (Wiener, FBP, bicubic, zero-filled)",
    ("task.tv_tolerance", "zero"): "the TV baseline always runs tv_max_iterations",
    ("task.tv_tolerance", "huge"): "the TV baseline stops at its first test (10 iterations)",
    ("task.sirt_iterations", "zero"): "the SIRT baseline is its start (zero)",
    ("task.cgls_iterations", "zero"): "the CGLS baseline is its start (zero)",
    ("task.l1_weight", "zero"): "the L1-wavelet baseline without penalty: least squares by FISTA",
    ("task.l1_weight", "huge"): "every wavelet coefficient is thresholded: a zero image, reported as a poor baseline",
    ("task.l1_tolerance", "zero"): "FISTA runs all task.l1_iterations",
    ("task.l1_tolerance", "huge"): "FISTA stops after its first iteration",
    ("task.kernel.sigma", "huge"): "a very wide Gaussian is a box blur",
    ("task.true_kernel.sigma", "huge"): "a very wide Gaussian is a box blur",
    ("task.kernel.angle", "negative"): "any angle in degrees",
    ("task.kernel.angle", "zero"): "a horizontal motion",
    ("task.kernel.angle", "huge"): "any angle in degrees (taken modulo 360)",
    ("task.wiener_alpha", "huge"): "a strongly regularised Wiener baseline (a flat image)",
    ("task.hole_ratio", "zero"): "no hole: a fit of the full image",
    ("task.gaussian_std", "zero"): "noiseless CT data",
    ("task.gaussian_std", "huge"): NOISE_LEVEL,
    ("task.photons", "huge"): "nearly noiseless CT data",
    ("task.phase", "negative"): "a phase of either sign",
    ("task.phase", "zero"): "a real image",
    ("task.phase", "huge"): "any amplitude is a valid (wrapped) phase",
    ("task.noise", "zero"): "noiseless k-space",
    ("task.noise", "huge"): NOISE_LEVEL,
    ("task.density_power", "zero"): "uniform density outside the centre",
    ("task.center", "zero"): "bin 0 is on the detector (an axis at its edge: a half-detector scan)",
    ("task.source_origin", "huge"): "a far source is a near-parallel beam",
    ("task.origin_detector", "huge"): "a far detector magnifies the projection",
    ("task.slice", "negative"): "read only with task.file (the simulation has one slice)",
    ("task.slice", "zero"): "read only with task.file (the simulation has one slice)",
    ("task.slice", "huge"): "read only with task.file (the simulation has one slice)",
    ("task.espirit.calib_width", "huge"): "the whole fully sampled centre",
    ("task.espirit.kernel_size", "huge"): "the kernel shrinks to fit the fully sampled centre",
    ("task.espirit.threshold", "zero"): "every singular vector is kept",
    ("task.espirit.crop", "zero"): "maps everywhere, no crop",
    ("task.singular_index", "zero"): "the singular vector of the largest singular value",
    ("task.delta", "zero"): "noiseless data",
    ("task.delta", "huge"): NOISE_LEVEL + " (with snr_db set, delta is not used)",
    ("integration_1d", "task.delta", "huge"): "snr_db sets the noise here; delta is not used",
    ("deconvolution_1d", "task.delta", "huge"): NOISE_LEVEL,
    ("task.snr_db", "negative"): "noise above the signal: a valid (hard) problem",
    ("task.snr_db", "zero"): "noise as large as the signal: a valid (hard) problem",
    ("task.snr_db", "huge"): "noiseless data",
    ("task.alpha", "huge"): "a strongly regularised Tikhonov baseline (near zero)",
    ("task.tsvd_threshold", "zero"): "TSVD keeps every singular value (the plain inverse)",
    ("task.tsvd_threshold", "huge"): "TSVD keeps no singular value (a zero baseline)",
    # networks
    ("network.channels_skip", "zero"): "no skip connection at that scale",
    ("network.alpha_l2", "zero"): "no ℓ2 part (the default)",
    ("network.alpha_l2", "huge"): WEIGHT,
    ("network.alpha", "huge"): WEIGHT,
    ("network.tv_eps", "huge"): "a strongly smoothed TV (close to a quadratic penalty)",
    # methods
    ("method.lr", "huge"): WEIGHT,
    ("method.input_lr", "huge"): WEIGHT,
    ("method.input.scale", "huge"): "any input scale; BatchNorm and the first convolution adapt",
    ("method.reg_noise_std", "zero"): "no input perturbation (the default)",
    ("method.reg_noise_std", "huge"): "an input drowned by its perturbation: valid, if useless",
    ("method.exp_weight", "zero"): "no exponential average (the default)",
    ("method.weight_decay", "zero"): "no weight decay (the default)",
    ("method.weight_decay", "huge"): WEIGHT,
    ("method.tv_weight", "zero"): "no TV term",
    ("method.tv_weight", "huge"): WEIGHT,
    ("method.tv_eps", "huge"): "a strongly smoothed isotropic TV",
    ("method.inner_steps", "huge"): "more inner steps than the run: z is never replaced (DIP with the autoencoding "
    "term)",
    ("method.ae_weight", "zero"): "no autoencoding term",
    ("method.ae_weight", "huge"): WEIGHT,
    ("method.denoiser_sigma", "huge"): "a strong denoiser (a flat image)",
    ("method.red_weight", "zero"): "no RED term",
    ("method.red_weight", "huge"): WEIGHT,
    ("method.mu", "huge"): WEIGHT,
    ("method.denoise_every", "huge"): "the denoiser runs once, at step 0",
    ("method.fit_threshold", "negative"): "a threshold in dB of either sign",
    ("method.fit_threshold", "zero"): "a threshold in dB of either sign",
    ("method.fit_threshold", "huge"): "a threshold never reached: no λ, μ schedule",
    ("method.threshold_step", "zero"): "a fixed threshold",
    ("method.threshold_step", "huge"): "the schedule acts once",
    ("method.increase_reg", "zero"): "no λ, μ schedule",
    ("method.increase_reg", "huge"): WEIGHT,
    ("method.x_range", "negative"): "[-1, 1]: a clip of another range",
    ("method.x_range", "zero"): "[0, 1]: the default clip",
    ("method.corruption_lr", "huge"): WEIGHT,
    ("method.corruption_init", "huge"): "any initial scale of g, h",
    ("method.gaussian_std", "zero"): "noiseless synthetic pairs",
    ("method.gaussian_std", "huge"): NOISE_LEVEL,
    ("method.photons", "huge"): "nearly noiseless synthetic sinograms",
    ("method.mask_steps", "zero"): "no stage 1: the random mask's sparse network",
    ("method.mask_steps", "huge"): "a run that learns only the mask (documented)",
    ("method.mask_lr", "huge"): WEIGHT,
    ("method.kl_weight", "zero"): "no KL term",
    ("method.kl_weight", "huge"): WEIGHT,
    ("method.temperature", "huge"): "a very soft relaxed Bernoulli",
    ("method.perturbation_std", "zero"): "no perturbation: K identical copies",
    ("method.perturbation_std", "huge"): "an input drowned by its perturbation: valid, if useless",
    ("method.guidance_weight", "zero"): "no self-guidance term",
    ("method.guidance_weight", "huge"): WEIGHT,
    ("method.sobolev_weight", "zero"): "plain ADP (the default)",
    ("method.sobolev_weight", "huge"): WEIGHT,
    ("method.lower_tol", "zero"): "always lower_max_iter iterations",
    ("method.lower_tol", "huge"): "one lower-level iteration per step",
    ("method.cg_tol", "zero"): "always cg_max_iter iterations",
    ("method.cg_tol", "huge"): "one CG iteration per step",
    ("method.maid_eps", "huge"): "a loose first accuracy, tightened by the line search",
    ("method.maid_nu", "huge"): "ε grows fast after a success",
    ("method.maid_step_increase", "huge"): "steps grow fast after a success (the line search cuts them)",
    ("method.maid_decrease", "zero"): "plain decrease",
    ("method.maid_decrease", "huge"): "a test never passed: ε only shrinks",
    ("method.maid_min_eps", "zero"): "MAID never stops updating (the default)",
    ("method.maid_min_eps", "huge"): "MAID stops at once: B = A",
    # uncertainty maps
    ("network.dropout", "zero"): "no dropout (the default)",
    ("uncertainty.dropout", "zero"): "MC dropout without dropout: identical passes, a zero std",
    ("uncertainty.seed_stride", "zero"): "identical members: a zero std",
}
# (group, option, kind) → why a value ALLOWED in general is refused in that group.
REFUSED_IN_GROUP: dict = {
    ("ct_measured", "task.slice", "negative"): "a slice index of the file",
    ("ct_measured", "task.slice", "huge"): "a slice index of the file",
}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plain_options(node, prefix: str) -> dict:
    """Leaves of a plain config tree that are numbers, lists of numbers or nulls, by their full path."""
    if isinstance(node, dict):
        options = {}
        for key, child in node.items():
            options.update(plain_options(child, f"{prefix}.{key}"))
        return options
    numbers = isinstance(node, list) and bool(node) and all(map(is_number, node))
    return {prefix: node} if is_number(node) or numbers or node is None or prefix in NUMERIC_WHEN_SET else {}


@functools.cache
def base_config(group: str):
    return compose_config(BASE + GROUPS[group][1], fast=False)


@functools.cache
def group_options(group: str) -> dict:
    section = GROUPS[group][0]
    options = {}
    for root in RUN_OPTIONS if section == "run" else (section,):
        value = OmegaConf.select(base_config(group), root)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        options.update(plain_options(value, root))
    return options


def option_type(option: str, default) -> type:
    if option in NUMERIC_WHEN_SET:
        return NUMERIC_WHEN_SET[option]
    first = default[0] if isinstance(default, list) else default
    return int if isinstance(first, int) else float


def option_cases():
    for group in GROUPS:
        for option, default in group_options(group).items():
            if default is None and option not in NUMERIC_WHEN_SET:
                continue  # NOT_NUMERIC (test_every_null_option_is_classified)
            for kind in BAD_VALUES:
                yield pytest.param(group, option, kind, id=f"{group}:{option}={kind}")


CASES = list(option_cases())


def allowed_reason(group: str, option: str, kind: str) -> str | None:
    if (group, option, kind) in REFUSED_IN_GROUP:
        return None
    return ALLOWED.get((group, option, kind), ALLOWED.get((option, kind)))


def bad_value(option: str, kind: str, default):
    value = BAD_VALUES[kind][0 if option_type(option, default) is int else 1]
    return [value, *default[1:]] if isinstance(default, list) else value


@pytest.fixture(scope="module")
def edip_checkpoint(tmp_path_factory) -> Path:
    """Stage-1 weights for method=edip: the pre-training network of the same settings, saved untrained."""
    module = build_module(base_config("method=edip_pretrain"))
    path = tmp_path_factory.mktemp("edip") / "edip_pretrained.pt"
    torch.save(module.network.state_dict(), path)
    return path


def build_run(cfg):
    check_uncertainty(cfg)  # batching.size and uncertainty.* are checked where they select the batched path
    return build_module(cfg)


def with_options(cfg, **options):
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for path, value in options.items():
            OmegaConf.update(cfg, path, value, merge=False)
    return cfg


@pytest.mark.parametrize("group,option,kind", CASES)
def test_bad_option_value(group, option, kind, edip_checkpoint):
    base = base_config(group)
    value = bad_value(option, kind, group_options(group)[option])
    extra = {"method.checkpoint": str(edip_checkpoint)} if group == "method=edip" else {}
    cfg = with_options(base, **extra, **{option: value})
    reason = allowed_reason(group, option, kind)
    if reason:
        build_run(cfg)  # valid: it must build
        return
    with pytest.raises(UserError) as error:
        build_run(cfg)
    message = str(error.value)
    assert "\n" not in message, message
    assert option in message, f"the message does not name {option}: {message}"


def test_every_null_option_is_classified():
    """A new option with a null default must say whether it takes a number (NUMERIC_WHEN_SET) or not."""
    nulls = {option for group in GROUPS for option, value in group_options(group).items() if value is None}
    assert nulls - set(NUMERIC_WHEN_SET) - NOT_NUMERIC == set()


def test_allow_list_is_reviewed():
    """NaN is never valid, and every entry of ALLOWED matches a case (no stale reasons)."""
    assert not any(key[-1] == "nan" for key in ALLOWED)
    cases = {tuple(case.values) for case in CASES}
    assert set(REFUSED_IN_GROUP) <= cases
    for key in ALLOWED:
        if len(key) == 3:
            assert key in cases, key
        else:
            assert any(case[1:] == key for case in cases), key


def test_cases_are_distinct():
    """Every (group, option, value) case has its own id, so that a failure names it."""
    assert len(CASES) == len({case.id for case in CASES})


# Loaders --------------------------------------------------------------------------------------------
def npy(path: Path, array, **kwargs) -> str:
    np.save(path, array, **kwargs)
    return str(path)


def png(path: Path, array) -> str:
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


def dicom(path: Path, rescale_slope="1") -> str:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = rescale_slope, -1024
    ds.PixelData = np.full((16, 16), 1000, np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def fastmri(path: Path, kspace, sens_maps=None) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if sens_maps is not None:
            f.create_dataset("sens_maps", data=sens_maps)
    return str(path)


def kspace(slices=2, coils=4, size=16, nan=False, inf=False):
    data = np.random.default_rng(0).standard_normal((slices, coils, size, size)).astype(np.complex64)
    if nan:
        data[..., 3, 5] = np.nan
    if inf:
        data[:, 0, 0, 0] = np.inf
    return data


def text(path: Path) -> str:
    """A file that is not what its suffix says."""
    path.write_bytes(b"not this format")
    return str(path)


def folder(path: Path, *, png_files: int = 0, dicom_files: int = 0) -> str:
    path.mkdir()
    for i in range(png_files):
        png(path / f"{i}.png", np.full((16, 16), 128, np.uint8))
    for i in range(dicom_files):
        dicom(path / f"{i}.dcm")
    return str(path)


def nan_tiff(path: Path) -> str:
    from PIL import Image

    array = np.ones((16, 16), np.float32)
    array[2, 3] = np.nan
    Image.fromarray(array, mode="F").save(path)
    return str(path)


# Writers: tmp_path → the options that point the task at the bad file.
def image(write, **options):
    return lambda tmp: {"task.image": write(tmp), **options}


def ct_npy(array, **options):
    return lambda tmp: {"task.image": npy(tmp / "x.npy", array, allow_pickle=array.dtype == object), **options}


def mri_file(data, sens_maps=None, **options):
    return lambda tmp: {"task.size": 16, "task.file": fastmri(tmp / "x.h5", data, sens_maps), **options}


def kernel_file(array=None, write=None):
    path = write or (lambda tmp: npy(tmp / "k.npy", array, allow_pickle=array.dtype == object))
    return lambda tmp: {"task.kernel.kind": "file", "task.kernel.path": path(tmp)}


def mask_file(array=None, write=None):
    return lambda tmp: {"task.mask": "file", "task.mask_path": (write or (lambda t: npy(t / "m.npy", array)))(tmp)}


NAN = np.array([[1.0, np.nan], [1.0, 1.0]], np.float32)
OBJECTS = np.array([{}, 1], object)
# id → (group, writer, a fragment the message must hold)
LOADER_CASES = {
    # images (every image task reads them through tasks/images.py)
    "image:empty-folder": ("denoising", image(lambda t: folder(t / "empty")), "holds no files"),
    "image:folder-index": (
        "denoising",
        image(lambda t: folder(t / "f", png_files=1), **{"task.index": 3}),
        "out of range",
    ),
    "image:not-an-image": ("denoising", image(lambda t: text(t / "x.png")), "Cannot read image"),
    "image:npy": ("denoising", image(lambda t: npy(t / "x.npy", np.ones((16, 16)))), "Cannot read image"),
    "image:float-tiff-nan": ("denoising", image(lambda t: nan_tiff(t / "x.tif")), "NaN or Inf"),
    # CT slices: .npy files and stacks, DICOM files and folders
    "ct:npy-nan": ("ct", ct_npy(np.pad(NAN, 7)), "NaN or Inf"),
    "ct:npy-inf": ("ct", ct_npy(np.full((16, 16), np.inf)), "NaN or Inf"),
    "ct:npy-empty": ("ct", ct_npy(np.zeros((0, 16))), "empty"),
    "ct:npy-1d": ("ct", ct_npy(np.zeros(16)), "expected 2D"),
    "ct:npy-4d": ("ct", ct_npy(np.zeros((1, 1, 16, 16))), "expected 2D"),
    "ct:npy-complex": ("ct", ct_npy(np.zeros((16, 16), complex)), "dtype complex128"),
    "ct:npy-bool": ("ct", ct_npy(np.zeros((16, 16), bool)), "dtype bool"),
    "ct:npy-object": ("ct", ct_npy(OBJECTS), "Cannot read CT image"),
    "ct:npy-stack-index": ("ct", ct_npy(np.zeros((2, 16, 16)), **{"task.index": 5}), "past the end"),
    "ct:dicom-unreadable": ("ct", image(lambda t: text(t / "x.dcm")), "Cannot read DICOM"),
    "ct:dicom-nan": ("ct", image(lambda t: dicom(t / "x.dcm", rescale_slope="NaN")), "NaN or Inf"),
    "ct:dicom-folder-index": (
        "ct",
        image(lambda t: folder(t / "f", dicom_files=1), **{"task.index": 4}),
        "past the end",
    ),
    # fastMRI HDF5 (missing files and datasets, non-HDF5 files: tests/test_mri.py); all stop before ESPIRiT
    "mri:kspace-nan": ("mri", mri_file(kspace(nan=True)), "NaN or Inf"),
    "mri:kspace-inf": ("mri", mri_file(kspace(inf=True)), "NaN or Inf"),
    "mri:kspace-2d": ("mri", mri_file(kspace()[0, 0]), "expected slices"),
    "mri:kspace-5d": ("mri", mri_file(kspace()[None]), "expected slices"),
    "mri:kspace-no-slices": ("mri", mri_file(kspace(slices=0)), "holds no slices"),
    "mri:kspace-no-coils": ("mri", mri_file(kspace(coils=0)), "empty"),
    "mri:kspace-strings": ("mri", mri_file(np.full((1, 2, 4, 4), b"a")), "dtype"),
    "mri:slice-not-whole": ("mri", mri_file(kspace(), **{"task.slice": 0.5}), "out of range"),
    "mri:sens-maps-nan": ("mri", mri_file(kspace(), kspace(nan=True), **{"task.maps": "given"}), "sens_maps"),
    "mri:sens-maps-shape": ("mri", mri_file(kspace(), kspace(size=8), **{"task.maps": "given"}), "k-space's shape"),
    # deblurring kernels (task.kernel.kind=file)
    "kernel:nan": ("deblurring", kernel_file(NAN), "NaN or Inf"),
    "kernel:inf": ("deblurring", kernel_file(np.full((3, 3), np.inf)), "NaN or Inf"),
    "kernel:negative": ("deblurring", kernel_file(np.eye(3) - 0.5), "non-negative"),
    "kernel:zero-sum": ("deblurring", kernel_file(np.zeros((3, 3))), "positive sum"),
    "kernel:1d": ("deblurring", kernel_file(np.ones(3)), "expected 2D"),
    "kernel:3d": ("deblurring", kernel_file(np.ones((3, 3, 3))), "expected 2D"),
    "kernel:empty": ("deblurring", kernel_file(np.ones((0, 3))), "empty"),
    "kernel:complex": ("deblurring", kernel_file(np.ones((3, 3), complex)), "dtype complex128"),
    "kernel:object": ("deblurring", kernel_file(OBJECTS), "Cannot read kernel file"),
    "kernel:not-an-image": ("deblurring", kernel_file(write=lambda t: text(t / "k.png")), "Cannot read kernel image"),
    "kernel:larger-than-image": ("deblurring", kernel_file(np.ones((40, 40))), "larger than the image"),
    "kernel:missing": ("deblurring", kernel_file(write=lambda t: str(t / "none.npy")), "does not exist"),
    # inpainting masks (task.mask=file)
    "mask:wrong-shape": ("inpainting", mask_file(np.ones((16, 16))), "resize the mask"),
    "mask:not-binary": ("inpainting", mask_file(np.full((32, 32), 0.7)), "other than 0 and 1"),
    "mask:all-zeros": ("inpainting", mask_file(np.zeros((32, 32))), "observes no pixel"),
    "mask:black-png": (
        "inpainting",
        mask_file(write=lambda t: png(t / "m.png", np.zeros((32, 32), np.uint8))),
        "observes no pixel",
    ),
    "mask:nan": ("inpainting", mask_file(np.pad(NAN, 15)), "NaN or Inf"),
    "mask:3d": ("inpainting", mask_file(np.ones((1, 32, 32))), "expected 2D"),
    "mask:complex": ("inpainting", mask_file(np.ones((32, 32), complex)), "dtype complex128"),
    "mask:not-an-image": ("inpainting", mask_file(write=lambda t: text(t / "m.png")), "Cannot read mask image"),
    "mask:missing": ("inpainting", mask_file(write=lambda t: str(t / "none.npy")), "does not exist"),
}


@pytest.mark.parametrize("case", list(LOADER_CASES))
def test_bad_input_file(case, tmp_path):
    group, write, fragment = LOADER_CASES[case]
    cfg = with_options(base_config(group), **write(tmp_path))
    with pytest.raises(UserError) as error:
        build_module(cfg)
    message = str(error.value)
    assert "\n" not in message and fragment in message, message


# The command line -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["motion-kernel-length", "nan-kspace"])
def test_cli_prints_one_line_and_exits_2(case, tmp_path):
    """The two cases of issue 15 that printed a traceback."""
    if case == "motion-kernel-length":
        args, named = ["task=deblurring", "task.kernel.kind=motion", "task.kernel.length=-3"], "task.kernel.length"
    else:
        args, named = ["task=mri", f"task.file={fastmri(tmp_path / 'nan.h5', kspace(nan=True))}"], "NaN or Inf"
    command = [sys.executable, "train.py", *args, "task.size=32", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    output = result.stderr + result.stdout
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert len(errors) == 1 and named in errors[0], errors

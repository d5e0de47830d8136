"""Image restoration tasks: operators and adjoints, input errors, noise models, and short DIP runs."""

import math

import numpy as np
import pytest
import torch

from untrained.errors import UserError
from untrained.operators.base import adjointness_error
from untrained.operators.blur import Blur, blur, make_kernel
from untrained.operators.generators.masks import make_mask
from untrained.operators.inpainting import Mask
from untrained.operators.noise import apply_noise
from untrained.operators.super_resolution import Downsample, downsampling_kernel
from untrained.tasks.deblurring import deblurring
from untrained.train import train

KERNELS = [
    dict(kind="gaussian", size=7, sigma=1.5),
    dict(kind="box", size=4),
    dict(kind="motion", length=8, angle=30.0),
]


@pytest.mark.parametrize("boundary", ["circular", "reflect", "valid"])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k["kind"])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_adjoint(boundary, kernel, channels):
    op = Blur(make_kernel(**kernel), (channels, 20, 24), boundary)
    assert adjointness_error(op) < 1e-4
    assert op.kernel.shape == make_kernel(**kernel).shape  # exposed for kernel-learning methods (ADP)


def test_blur_boundaries_agree_inside_and_valid_is_smaller():
    x = torch.rand(1, 2, 24, 24)
    kernel = make_kernel("gaussian", size=5, sigma=1.0)
    circular, reflect, valid = (blur(x, kernel, b) for b in ("circular", "reflect", "valid"))
    assert valid.shape == (1, 2, 20, 20)
    assert torch.allclose(circular[..., 2:-2, 2:-2], valid, atol=1e-5)
    assert torch.allclose(reflect[..., 2:-2, 2:-2], valid, atol=1e-5)
    # a convolution, not a correlation: an asymmetric kernel shifts a delta towards the kernel's mass
    delta = torch.zeros(1, 1, 9, 9)
    delta[..., 4, 4] = 1
    shift = torch.zeros(3, 3)
    shift[1, 2] = 1  # mass right of the centre
    assert blur(delta, shift, "circular")[0, 0, 4, 5] == pytest.approx(1, abs=1e-6)


def test_kernel_file_round_trip(tmp_path):
    kernel = make_kernel("motion", length=7, angle=0.0)
    np.save(tmp_path / "k.npy", kernel.numpy() * 3)
    assert torch.allclose(make_kernel("file", path=str(tmp_path / "k.npy")), kernel, atol=1e-6)
    assert kernel[3].sum() == pytest.approx(1, abs=1e-6)  # horizontal motion lies on the middle row


@pytest.mark.parametrize("factor", [4, 8])
@pytest.mark.parametrize("kind", ["lanczos2", "bicubic"])
def test_downsample_adjoint_and_shape(factor, kind):
    op = Downsample(factor, (3, 32, 48), kind)
    assert op(torch.rand(2, 3, 32, 48)).shape == (2, 3, 32 // factor, 48 // factor)
    assert adjointness_error(op) < 1e-4


def test_lanczos2_matches_reference_formula():
    """DIP's downsampler.py: width 4f, phase 0.5, d = |i + 0.5 − centre| / f, val = 2 sin(πd) sin(πd/2) / (π² d²)."""
    factor = 4
    size = 4 * factor
    centre = (size + 2) / 2
    taps = []
    for i in range(1, size + 1):
        d = abs(i + 0.5 - centre) / factor
        taps.append(2 * math.sin(math.pi * d) * math.sin(math.pi * d / 2) / (math.pi**2 * d**2))
    reference = np.outer(taps, taps)
    reference /= reference.sum()
    assert np.allclose(downsampling_kernel(factor, "lanczos2").numpy(), reference, atol=1e-6)


def test_mask_adjoint():
    op = Mask(make_mask("pixels", (16, 16), keep_ratio=0.5), (3, 16, 16))
    assert adjointness_error(op) < 1e-4


@pytest.mark.parametrize("kind", ["pixels", "boxes", "center", "text"])
def test_mask_kinds_hit_their_ratio(kind):
    mask = make_mask(kind, (64, 64), seed=1, keep_ratio=0.7, hole_ratio=0.25)
    missing = 1 - mask.mean().item()
    expected = {"pixels": 0.3, "boxes": 0.25, "center": 0.25}.get(kind)
    if expected is None:
        assert 0.02 < missing < 0.6
    else:
        assert missing == pytest.approx(expected, abs=0.06)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="larger than the image"):
        Blur(make_kernel("gaussian", size=9), (1, 8, 8))
    with pytest.raises(UserError, match="mask"):
        Mask(torch.ones(1, 16, 15), (3, 16, 16))
    np.save(tmp_path / "m.npy", np.ones((10, 10)))
    with pytest.raises(UserError, match="mask file"):
        make_mask("file", (16, 16), path=str(tmp_path / "m.npy"))
    with pytest.raises(UserError, match="does not divide"):
        Downsample(8, (3, 36, 36))
    with pytest.raises(UserError, match=">= 0"):
        apply_noise(torch.rand(1, 1, 4, 4), "gaussian", -0.1)
    with pytest.raises(UserError, match=">= 0"):
        deblurring("camera", size=32, noise_level=-1.0)
    with pytest.raises(UserError, match="Unknown kernel"):
        make_kernel("disk")


def test_noise_models_seeded_with_right_statistics():
    x = torch.full((1, 1, 200, 200), 0.4)
    gaussian = apply_noise(x, "gaussian", 0.05, seed=3)
    assert torch.equal(gaussian, apply_noise(x, "gaussian", 0.05, seed=3))
    assert not torch.equal(gaussian, apply_noise(x, "gaussian", 0.05, seed=4))
    assert (gaussian - x).std().item() == pytest.approx(0.05, rel=0.03)
    poisson = apply_noise(x, "poisson", 50.0, seed=0)  # counts ~ Poisson(20): mean 0.4, variance 0.4/50
    assert poisson.mean().item() == pytest.approx(0.4, rel=0.02)
    assert poisson.var().item() == pytest.approx(0.4 / 50, rel=0.05)
    salt_pepper = apply_noise(x, "salt_pepper", 0.1, seed=0)
    hit = salt_pepper != x
    assert hit.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert set(salt_pepper[hit].unique().tolist()) == {0.0, 1.0}
    impulse = apply_noise(x, "impulse", 0.2, seed=0)
    assert (impulse != x).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert impulse[impulse != x].std().item() == pytest.approx(1 / 12**0.5, rel=0.05)  # uniform values


def test_semi_blind_and_nonlinear_problems():
    true_kernel = dict(kind="gaussian", size=7, sigma=2.0)
    problem = deblurring(
        "camera", size=32, kernel=dict(kind="gaussian", size=7, sigma=1.0), true_kernel=true_kernel, noise_level=0.0
    )
    assert torch.allclose(problem.operator.kernel, make_kernel("gaussian", size=7, sigma=1.0))
    assert torch.allclose(problem.y, blur(problem.x_true, make_kernel(**true_kernel), "circular"), atol=1e-5)
    nonlinear = deblurring("camera", size=32, gain=3.0, noise_level=0.0)
    assert not nonlinear.operator.linear
    linear_blur = nonlinear.operator.blur(nonlinear.x_true)
    assert torch.allclose(nonlinear.y, (1 - torch.exp(-3 * linear_blur)) / (1 - math.exp(-3)), atol=1e-5)


@pytest.mark.parametrize(
    "task,overrides,degraded",
    [
        ("deblurring", ["task.kernel.size=5", "task.kernel.sigma=1.0"], "blurred"),
        ("semi_blind_deblurring", ["task.kernel.size=5", "task.true_kernel.size=5"], "blurred"),
        ("nonlinear_deblurring", ["task.kernel.size=5", "task.kernel.sigma=1.0"], "blurred"),
        ("inpainting", ["task.mask=pixels"], "masked"),
        ("super_resolution", ["task.factor=4"], "bicubic"),
    ],
)
def test_short_dip_run_beats_degraded_input(make_cfg, task, overrides, degraded):
    metrics = train(
        make_cfg([f"task={task}", "task.image=camera", "trainer.max_steps=150", "module.log_every=10", *overrides])
    )
    assert metrics["status"] == "completed"
    assert metrics["best_psnr"] > metrics[f"baseline_{degraded}_psnr"] + 0.3, metrics
    if task == "super_resolution":  # luminance PSNR with border crop, through InverseProblem.extra_metrics
        assert metrics["final_psnr_y"] > metrics["baseline_bicubic_psnr"] - 5


def test_denoising_accepts_other_noise_models():
    from untrained.tasks.denoising import denoising

    problem = denoising("camera", size=32, noise="salt_pepper", noise_level=0.2, noise_seed=1)
    corrupted = problem.y != problem.x_true
    assert corrupted.float().mean().item() == pytest.approx(0.2, abs=0.05)
    assert set(problem.y[corrupted].unique().tolist()) <= {0.0, 1.0}

"""The orthogonal wavelet transform and the L1-wavelet SENSE baseline (FISTA) of the MRI task."""

import numpy as np
import pytest
import torch

from untrained.baselines.sparse import fista_l1, soft_threshold
from untrained.errors import UserError
from untrained.operators.base import adjointness_error, euclidean_norm
from untrained.operators.mri import MultiCoilMRI, ifft2c
from untrained.operators.wavelet import Wavelet2D
from untrained.tasks.mri import mri


@pytest.mark.parametrize("shape", [(32, 32), (37, 45), (64, 48), (2, 3)])
@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_wavelet_is_orthogonal_for_any_size(shape, wavelet):
    transform = Wavelet2D(shape, wavelet, levels=4, dtype=torch.complex128)
    x = torch.randn(2, *shape, dtype=torch.complex128)
    assert adjointness_error(transform) < 1e-12
    assert torch.allclose(transform.adjoint(transform(x)), x, atol=1e-12)  # perfect reconstruction
    assert torch.allclose(transform(transform.adjoint(x)), x, atol=1e-12)  # square: ΨΨᴴ = I too
    assert torch.isclose(euclidean_norm(transform(x)), euclidean_norm(x))


def test_wavelet_equals_pywavelets_periodization():
    pywt = pytest.importorskip("pywt")
    x = np.random.default_rng(0).standard_normal((64, 48))
    for name in ("haar", "db4"):
        transform = Wavelet2D(x.shape, name, levels=2, dtype=torch.float64)
        expected, _ = pywt.coeffs_to_array(pywt.wavedec2(x, name, mode="periodization", level=2))
        np.testing.assert_allclose(transform(torch.from_numpy(x)[None])[0].numpy(), expected, atol=1e-12)


def test_wavelet_levels_are_capped_and_options_checked():
    assert Wavelet2D((128, 128), "db4", levels=10).levels == 4  # PyWavelets' dwt_max_level(128, 8)
    with pytest.raises(UserError, match="task.wavelet="):
        Wavelet2D((32, 32), "db99")
    with pytest.raises(UserError, match="task.wavelet_levels"):
        Wavelet2D((32, 32), "db4", levels=0)


def test_soft_threshold_keeps_the_phase():
    z = torch.tensor([3 + 4j, 0.1 + 0j, 0j], dtype=torch.complex64)
    out = soft_threshold(z, 1.0)
    assert torch.allclose(out, torch.tensor([2.4 + 3.2j, 0j, 0j]))


def test_fista_reaches_the_closed_form_minimiser():
    """Fully sampled single-coil k-space: A = F is unitary, so the minimiser of ½‖Ax − y‖² + λ‖Ψx‖₁ is
    Ψᴴ soft(Ψ Fᴴy, λ)."""
    shape, weight = (37, 45), 0.05
    generator = torch.Generator().manual_seed(0)
    operator = MultiCoilMRI(torch.ones(1, *shape, dtype=torch.complex64), torch.ones(shape))
    y = torch.randn(1, 1, *shape, dtype=torch.complex64, generator=generator)
    transform = Wavelet2D(shape, "db4", 3)
    expected = transform.adjoint(soft_threshold(transform(ifft2c(y)[:, 0]), weight))
    estimate, iterations = fista_l1(
        operator, y, torch.zeros(1, *shape, dtype=torch.complex64), weight, transform, 500, 1e-6
    )
    assert iterations < 500
    assert euclidean_norm(estimate - expected) < 1e-4 * euclidean_norm(expected)


def test_l1_wavelet_baseline_beats_zero_filled_and_reports_iterations():
    problem = mri(size=48, coils=4, maps="given", l1_iterations=100)
    psnr = {name: float(problem.psnr(image)) for name, image in problem.baselines().items()}
    assert set(psnr) == {"zero_filled", "cg_sense", "l1_wavelet", "tv_sense"}
    assert psnr["l1_wavelet"] > psnr["zero_filled"] + 2
    assert 1 <= problem.info["baseline_iterations"]["l1_wavelet"] <= 100


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("l1_weight", -1.0, "task.l1_weight"),
        ("l1_iterations", 0, "task.l1_iterations"),
        ("wavelet", "db9", "task.wavelet"),
    ],
)
def test_l1_options_are_checked(option, value, message):
    with pytest.raises(UserError, match=message):
        mri(size=16, coils=2, **{option: value})

"""Metric conventions: fastMRI's SSIM and NMSE, the DIP notebooks' PSNR, and metrics.json's metric_conventions."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from untrained.metrics import nmse, ssim_fastmri
from untrained.tasks.denoising import denoising
from untrained.train import train


def images(shape=(1, 1, 40, 36), seed=0):
    generator = torch.Generator().manual_seed(seed)
    truth = torch.rand(shape, generator=generator, dtype=torch.float64) * 2
    return truth + 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64), truth


def test_ssim_fastmri_equals_fastmri_and_skimage():
    prediction, truth = images()
    value = float(ssim_fastmri(prediction, truth))
    gt, pred = truth[:, 0].numpy(), prediction[:, 0].numpy()
    expected = structural_similarity(gt[0], pred[0], data_range=gt.max())  # win_size 7, uniform window
    assert value == pytest.approx(expected, abs=1e-6)
    evaluate = pytest.importorskip("fastmri.evaluate")
    assert value == pytest.approx(evaluate.ssim(gt, pred).item(), abs=1e-6)


def test_ssim_fastmri_uses_each_slices_maximum():
    prediction, truth = images((2, 1, 24, 24))
    truth[1] *= 3
    per_slice = [
        structural_similarity(t[0], p[0], data_range=t.max()) for t, p in zip(truth.numpy(), prediction.numpy())
    ]
    assert float(ssim_fastmri(prediction, truth)) == pytest.approx(np.mean(per_slice), abs=1e-6)


def test_nmse_on_known_arrays():
    truth = torch.tensor([[3.0, 4.0]])
    assert float(nmse(torch.tensor([[3.0, 2.0]]), truth)) == pytest.approx(4 / 25)
    evaluate = pytest.importorskip("fastmri.evaluate")
    prediction, truth = images()
    assert float(nmse(prediction, truth)) == pytest.approx(float(evaluate.nmse(truth.numpy(), prediction.numpy())))


def test_psnr_is_the_dip_notebooks_psnr_of_the_clipped_output():
    """compare_psnr(img_np, out.clip(0, 1)) of the DIP notebooks: skimage infers data_range 1 for floats in [0, 1]."""
    problem = denoising(size=32, bm3d=False)
    output = problem.y * 1.3 - 0.1  # outside [0, 1] in places, so the clipping matters
    expected = peak_signal_noise_ratio(problem.x_true[0].numpy(), output[0].clip(0, 1).numpy())
    assert float(problem.psnr(output)) == pytest.approx(expected, abs=1e-4)


def test_mri_metrics_json_has_fastmri_metrics_and_conventions(make_cfg, tmp_path):
    cfg = make_cfg(
        [
            "task=mri",
            "task.coils=4",
            "task.cg_iterations=2",
            "task.l1_iterations=5",
            "network=skip",
            "trainer.max_steps=4",
            "module.log_every=2",
        ]
    )
    train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for prefix in ("final", "best", "baseline_zero_filled", "baseline_cg_sense", "baseline_l1_wavelet"):
        for metric in ("psnr", "ssim", "ssim_fastmri", "nmse"):
            assert np.isfinite(saved[f"{prefix}_{metric}"]), f"{prefix}_{metric}"
    conventions = saved["metric_conventions"]
    assert {"psnr", "ssim", "ssim_fastmri", "nmse", "display"} <= set(conventions)
    assert "7×7 uniform" in conventions["ssim_fastmri"] and "Gaussian window 11" in conventions["ssim"]

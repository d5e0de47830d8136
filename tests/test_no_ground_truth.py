"""Runs without a ground truth: each image task fitted to a measured image file (task.measurement), the outputs such
a run writes (reconstruction, curves of the data loss and the stopping statistic, metrics.json with the data
residual and no PSNR/SSIM/best iterate), and the sweep report over runs with and without a ground truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import compose_config
from untrained.errors import UserError
from untrained.report import main as report_main
from untrained.run import build_module
from untrained.train import train

STEPS = ["trainer.max_steps=12", "module.log_every=4"]
# ES-WMV with a short window and patience, so that the rule fires within a tiny run (and its curve is written).
STOP_EARLY = [
    "callbacks=es_wmv",
    "callbacks.early_stopping.window=3",
    "callbacks.early_stopping.patience=2",
    "callbacks.early_stopping.check_every=1",
    "~callbacks.progress_bar",
    "~callbacks.images",
]


def photo(path: Path, size=(32, 32), channels: int = 3, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    array = (rng.random((*size, channels)) * 255).astype(np.uint8)
    Image.fromarray(array if channels == 3 else array[..., 0]).save(path)
    return str(path)


def no_gt_metrics(metrics: dict) -> None:
    """What a run without a ground truth reports: the data fit, never a PSNR, SSIM or best iterate."""
    assert metrics["status"] == "completed" and metrics["steps"] > 0
    assert not [k for k in metrics if "psnr" in k or "ssim" in k or k.startswith("best")], metrics.keys()
    assert 0 <= metrics["reconstruction_residual"] < 10 and metrics["final_loss"] >= 0
    assert metrics["reconstruction"] in ("es", "final")
    assert "psnr" not in metrics["metric_conventions"] and "*_residual" in metrics["metric_conventions"]
    assert any(k.startswith("baseline_") and k.endswith("_residual") for k in metrics)


def measured_case(task: str, tmp: Path) -> list[str]:
    image = photo(tmp / "measured.png", size=(16, 16) if task == "super_resolution" else (32, 32))
    if task == "inpainting":
        mask = np.ones((32, 32), np.uint8) * 255
        mask[8:20, 10:22] = 0
        Image.fromarray(mask).save(tmp / "mask.png")
        return [f"task.measurement={image}", "task.mask=file", f"task.mask_path={tmp / 'mask.png'}"]
    if task == "deblurring":
        return [f"task.measurement={image}", "task.kernel.size=5", "task.noise_level=0.02"]
    if task == "super_resolution":
        return [f"task.measurement={image}", "task.factor=2"]
    return [f"task.measurement={image}", "task.sigma=20"]


@pytest.mark.parametrize("task", ["denoising", "inpainting", "deblurring", "super_resolution"])
def test_image_task_runs_without_ground_truth(task, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_config([f"task={task}", *measured_case(task, tmp_path), *STEPS], out))
    no_gt_metrics(metrics)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["reconstruction_residual"] == pytest.approx(metrics["reconstruction_residual"])
    assert np.load(out / "reconstruction.npy").shape == (3, 32, 32)  # the file's own size (× the factor)
    assert (out / "reconstruction.png").is_file() and (out / "curves.png").is_file()
    assert not (out / "best.png").exists() and not (out / "ground_truth.png").exists()
    history = json.loads((out / "history.json").read_text())
    assert "psnr" not in history and len(history["loss"]) == metrics["steps"]


def test_stopping_rule_chooses_the_output_and_its_curve_is_written(tmp_path):
    out = tmp_path / "run"
    overrides = ["task=denoising", *measured_case("denoising", tmp_path), "trainer.max_steps=40", *STOP_EARLY]
    metrics = train(compose_config(overrides, out))
    no_gt_metrics(metrics)
    assert metrics["es_stopped"] and metrics["reconstruction"] == "es" and metrics["steps"] < 40
    assert np.array_equal(np.load(out / "reconstruction.npy"), np.load(out / "es.npy"))
    history = json.loads((out / "history.json").read_text())
    variances = [v for v in history["es_variance"] if v is not None]
    assert len(history["es_variance"]) == len(history["step"]) and len(variances) >= 3
    assert metrics["es_variance"] == pytest.approx(min(variances))
    assert (out / "curves.png").is_file()


@pytest.mark.parametrize(
    "task,options,fragment",
    [
        ("denoising", ["task.measurement=/nonexistent/noisy.png"], "task.measurement="),
        ("inpainting", ["task.measurement={image}", "task.mask=boxes"], "task.mask=file"),
        ("deblurring", ["task.measurement={image}", "task.true_kernel={{kind:box,size:3}}"], "task.true_kernel"),
        ("denoising", ["task.measurement={npy}"], "NaN or Inf"),
        ("denoising", ["task.measurement={text}"], "suffix"),
    ],
)
def test_bad_measurements_stop_with_one_line(task, options, fragment, tmp_path):
    image = photo(tmp_path / "m.png")
    bad = np.ones((8, 8), np.float32)
    bad[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "m.txt").write_text("not an image")
    names = {"image": image, "npy": tmp_path / "nan.npy", "text": tmp_path / "m.txt"}
    overrides = [option.format(**names) for option in options]
    with pytest.raises(UserError) as error:
        build_module(compose_config([f"task={task}", *overrides]))
    assert "\n" not in str(error.value) and fragment in str(error.value), str(error.value)


def hydra_run(directory: Path, overrides: list[str]) -> None:
    """A run directory as Hydra leaves it (.hydra/overrides.yaml), for the sweep report."""
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def test_report_shows_runs_with_and_without_ground_truth_side_by_side(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    measured = measured_case("denoising", tmp_path)
    for name, extra in (("0", []), ("1", measured)):
        overrides = ["task=denoising", *extra, *STEPS]
        train(compose_config(overrides, sweep / name))
        hydra_run(sweep / name, overrides)
    report_main([str(sweep)])
    assert "Tables and figures in" in capsys.readouterr().out
    rows = list(csv.DictReader(open(sweep / "report" / "summary.csv")))
    with_gt = next(r for r in rows if "measured.png" not in r["setting"])
    without = next(r for r in rows if "measured.png" in r["setting"])
    assert float(with_gt["final_psnr_mean"]) > 0 and without["final_psnr_mean"] == ""
    assert float(without["residual_mean"]) > 0 and float(with_gt["residual_mean"]) > 0
    table = (sweep / "report" / "summary.md").read_text()
    assert "–" in table and "nan" not in table.lower()
    assert (sweep / "report" / "reconstructions.png").is_file() and (sweep / "report" / "psnr_curves.png").is_file()

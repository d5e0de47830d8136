"""A sweep where some runs fail (Hydra's default launcher, in one process), then its report."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from untrained.report import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a multirun sweep in subprocesses
def test_failed_runs_never_stop_the_sweep_and_the_report_counts_them(tmp_path, capsys):
    # task.sigma=-1 is a user error: those two jobs fail before training, the other two must still run.
    sweep = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            f"hydra.sweep.dir={tmp_path}",
            "seed=0,1",
            "task.sigma=25,-1",
            "trainer.max_steps=6",
            "module.log_every=2",
            "task.size=32",
            "network.channels_down=[8,8]",
            "network.channels_up=[8,8]",
            "network.channels_skip=[2,2]",
            "callbacks=none",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert sweep.returncode != 0 and "task.sigma" in sweep.stderr + sweep.stdout  # Hydra reports the failure at the end
    good = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in (0, 2)]
    assert all(m["status"] == "completed" for m in good)
    assert not (tmp_path / "1" / "metrics.json").exists() and not (tmp_path / "3" / "metrics.json").exists()

    main([str(tmp_path)])
    out = tmp_path / "report"
    assert "Tables and figures in" in capsys.readouterr().out
    rows = {r["setting"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"denoising task.sigma=25", "denoising task.sigma=-1"}
    ok, failed = rows["denoising task.sigma=25"], rows["denoising task.sigma=-1"]
    assert (ok["runs"], ok["failed"], failed["runs"], failed["failed"]) == ("2", "0", "2", "2")
    best = [m["best_psnr"] for m in good]
    assert np.isclose(float(ok["best_psnr_mean"]), np.mean(best)) and np.isclose(
        float(ok["best_psnr_std"]), np.std(best)
    )
    assert float(ok["steps_mean"]) == 6 and failed["best_psnr_mean"] == ""
    markdown = (out / "summary.md").read_text()
    assert (
        f"{np.mean(best):.2f} ± {np.std(best):.2f}" in markdown
        and "| denoising task.sigma=-1 | vanilla | 2 | 2 |" in markdown
    )
    statuses = {r["task.sigma"]: r["status"] for r in csv.DictReader(open(out / "runs.csv"))}
    assert statuses == {"25": "completed", "-1": "no metrics.json"}
    for figure in ("psnr_curves.png", "reconstructions.png"):
        assert np.asarray(Image.open(out / figure)).std() > 0

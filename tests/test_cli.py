"""The command line as a user types it: a multirun and an experiment preset."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "trainer.max_steps=4",
    "task.size=32",
    "network.channels_down=[8,8]",
    "network.channels_up=[8,8]",
    "network.channels_skip=[2,2]",
    "callbacks=none",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "train.py", *args, *TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_multirun_sweeps_learning_rates_with_own_wandb_runs(tmp_path):
    run_cli("-m", "method.lr=1e-3,1e-2", f"hydra.sweep.dir={tmp_path}")
    lrs = []
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["status"] == "completed"
        assert len(list((tmp_path / job / "wandb").glob("offline-run-*"))) == 1
        lrs.append(
            float(
                next(
                    line
                    for line in (tmp_path / job / ".hydra" / "overrides.yaml").read_text().splitlines()
                    if "method.lr" in line
                ).split("=")[1]
            )
        )
    assert lrs == [1e-3, 1e-2]


def test_experiment_preset_applies(tmp_path):
    run_cli("experiment=dip_denoising", "logger=none", f"hydra.run.dir={tmp_path}")
    config = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "exp_weight: 0.99" in config and "reg_noise_std: 0.0333" in config

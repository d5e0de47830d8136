"""The comparison command of held-out stopping and uncertainty maps (experiments/reproduce/stopping_uncertainty.py):
a tiny run of one denoising setting writes the table, the per-run rows and the maps figure."""

from __future__ import annotations

import json
import sys

import pytest

SMALL_SKIP_NET = ["network.channels_down=[16,16,16]", "network.channels_up=[16,16,16]", "network.channels_skip=[4,4,4]"]


def test_stopping_uncertainty_command_writes_gaps_calibration_and_maps(monkeypatch, tmp_path):
    from experiments.reproduce import stopping_uncertainty

    results = tmp_path / "results"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "x",
            *("--scale", "cpu", "--threads", "1", "--device", "cpu", "--results", str(results)),
            *("--runs", str(tmp_path / "runs"), "--steps", "40", "--size", "32"),
            *("--only", "denoising_astronaut_s25"),
            *("--override", "task.tv_max_iterations=20", "callbacks.early_stopping.patience=10", *SMALL_SKIP_NET),
        ],
    )
    stopping_uncertainty.main()
    table = json.loads((results / "stopping_uncertainty_cpu.json").read_text())
    rows = {row["quantity"]: row for row in table["rows"]}
    assert rows["median detection gap, held-out rule, all settings"]["ours"] is not None
    assert rows["mean of two members − one member, σ = 25"]["paper"] == pytest.approx(0.57)
    run = table["data"]["runs"]["denoising_astronaut_s25"]
    assert set(run) >= {"full", "holdout", "cells", "ensemble", "mc_dropout", "holdout_f0.05", "holdout_f0.2"}
    best = run["full"]["best_psnr"]
    assert run["holdout"]["holdout_step"] < 40 and run["holdout"]["holdout_refit_psnr"] <= best + 0.05
    ensemble = run["ensemble"]
    assert len(ensemble["uncertainty_member_psnr"]) == 4 and ensemble["uncertainty_std_mean"] > 0
    assert run["two_member_mean_psnr"] is not None
    markdown = (results / "stopping_uncertainty_cpu.md").read_text()
    assert "| denoising_astronaut_s25 |" in markdown and "held-out fraction's cost" in markdown
    assert (results / "stopping_uncertainty_cpu_maps.png").stat().st_size > 10_000


def test_paper_scale_runs_compose(tmp_path):
    from experiments.reproduce import common, stopping_uncertainty
    from untrained.run import check_config, compose

    spec = stopping_uncertainty.SCALES["paper"]
    for label, setting in stopping_uncertainty.settings(spec).items():
        for name, overrides in stopping_uncertainty.runs_of(label, setting, spec).items():
            cfg = compose([*common.QUIET, *overrides, f"paths.output_dir={tmp_path}"])
            check_config(cfg)
            assert cfg.trainer.max_steps == setting["steps"]
            if name == "ensemble":
                assert (
                    cfg.uncertainty.members == spec["members" if label.startswith("denoising") else "imaging_members"]
                )

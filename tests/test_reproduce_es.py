"""The reproduction commands for ES-DIP (experiments/reproduce/early_stopping.py) and the tutorial's Fig. 6
(experiments/reproduce/robustness.py): tiny runs write their tables with the expected rows."""

from __future__ import annotations

import json
import sys

import pytest

SMALL_SKIP_NET = ["network.channels_down=[16,16,16]", "network.channels_up=[16,16,16]", "network.channels_skip=[4,4,4]"]


def run_command(module, monkeypatch, tmp_path, *options: str) -> dict:
    results = tmp_path / "results"
    argv = ["x", "--scale", "cpu", "--threads", "1", "--device", "cpu", "--results", str(results)]
    monkeypatch.setattr(sys, "argv", [*argv, "--runs", str(tmp_path / "runs"), *options])
    module.main()
    return json.loads((results / f"{module.NAME}_cpu.json").read_text())


def test_early_stopping_command_writes_per_run_and_median_rows(monkeypatch, tmp_path):
    from experiments.reproduce import early_stopping

    # 130 steps: both rules have variances (W = 100, EMV after step 100) but cannot fire (P = 1000)
    table = run_command(
        early_stopping,
        monkeypatch,
        tmp_path,
        *("--steps", "130", "--size", "32", "--only", "denoising_camera_s25", "ct_18views"),
        *("--override", "task.tv_max_iterations=20", *SMALL_SKIP_NET),
    )
    quantities = [row["quantity"] for row in table["rows"]]
    assert "ES-WMV median detection gap, denoising (all runs)" in quantities
    assert "ES-EMV detection gap, ct_18views" in quantities
    runs = table["data"]["runs"]
    assert set(runs) == {"denoising_camera_s25", "ct_18views"}
    for run in runs.values():
        for rule in ("wmv", "emv"):
            report = run["rules"][rule]
            assert report["stopped"] is False and 100 <= report["step"] < 130
            assert report["gap"] == pytest.approx(run["best_psnr"] - report["psnr"]) and report["gap"] >= 0
        assert run["variance"]["wmv"] and run["variance"]["wmv"][0][0] >= 99  # defined from the W-th step on
    markdown = (tmp_path / "results" / "early_stopping_cpu.md").read_text()
    assert "| denoising_camera_s25 |" in markdown and "ES-WMV fired on denoising runs" in markdown


def test_robustness_command_writes_the_table_and_the_figure(monkeypatch, tmp_path):
    from experiments.reproduce import robustness

    table = run_command(
        robustness,
        monkeypatch,
        tmp_path,
        *(
            "--steps",
            "20",
            "--size",
            "32",
            "--methods",
            "vanilla",
            "aseqdip",
            "--override",
            "task.tv_max_iterations=20",
        ),
    )
    quantities = [row["quantity"] for row in table["rows"]]
    assert any(q.startswith("aSeqDIP: peak − PSNR at step") for q in quantities)
    assert any(q.startswith("vanilla DIP: peak − PSNR at step") for q in quantities)
    rows = table["data"]["rows"]
    assert set(rows) == {"vanilla", "aseqdip"} and all(row["drop"] >= 0 for row in rows.values())
    assert (tmp_path / "results" / "robustness_cpu.png").stat().st_size > 0

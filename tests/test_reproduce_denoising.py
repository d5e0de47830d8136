"""The denoising reproduction commands (experiments/reproduce/dip_denoising.py, deep_decoder_denoising.py): their
paper-scale runs compose to the papers' settings, and their machinery writes every row of the table (tiny protocol)."""

from __future__ import annotations

import json

import pytest

from experiments.reproduce import deep_decoder_denoising as dd
from experiments.reproduce import dip_denoising as dip
from untrained.run import compose

PAPER = dip.PROTOCOLS["paper"]


def test_paper_scale_dip_runs_compose_to_the_reference_notebook_setting():
    for averaged in (False, True):
        cfg = compose(dip.dip_overrides(PAPER, "astronaut", averaged))
        assert cfg.task.size == 512 and cfg.task.sigma == 25.0 and cfg.task.clip
        assert cfg.task.bm3d and cfg.task.nlm
        assert cfg.trainer.max_steps == 3000
        assert list(cfg.network.channels_down) == [128] * 5 and list(cfg.network.channels_skip) == [4] * 5
        assert cfg.network.upsample_mode == "bilinear" and cfg.network.pad == "reflection"
        assert cfg.method.lr == 0.01 and cfg.method.input.channels == 32
        assert cfg.method.reg_noise_std == pytest.approx(1 / 30)
        assert cfg.method.exp_weight == (0.99 if averaged else 0.0)
        assert not cfg.performance.autocast
    assert set(PAPER["images"]) == {"astronaut", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina"}


def test_paper_scale_deep_decoder_runs_compose_to_the_reference_setting():
    cfg = compose(dd.dd_overrides(PAPER, "astronaut", PAPER["dd_channels"], PAPER["dd_steps"]))
    assert cfg.network._target_.endswith("DeepDecoder")
    assert cfg.network.channels == 128 and cfg.network.blocks == 6 and cfg.method.input.channels == 128
    assert cfg.method.lr == 0.01 and cfg.method.reg_noise_std == 0 and cfg.method.exp_weight == 0
    assert cfg.trainer.max_steps == 1900 and cfg.task.size == 512 and cfg.task.sigma == 25.0


def test_smoke_protocol_writes_both_tables_and_reuses_the_dip_runs(tmp_path):
    options = ["--smoke", "--threads", "1", "--device", "cpu", "--runs", str(tmp_path / "runs")]
    options += ["--results", str(tmp_path / "results")]
    dip.main(options)
    table = json.loads((tmp_path / "results" / "dip_denoising_cpu.json").read_text())
    quantities = [row["quantity"] for row in table["rows"]]
    for relation in ("DIP − CBM3D", "DIP + averaging − CBM3D", "DIP + averaging − DIP", "NLM − CBM3D"):
        assert relation in quantities
    relation = table["rows"][quantities.index("DIP + averaging − DIP")]
    assert relation["paper"] == pytest.approx(1.21) and relation["ours"] is not None
    assert all(row["ours"] is not None for row in table["rows"])
    markdown = (tmp_path / "results" / "dip_denoising_cpu.md").read_text()
    assert "| NLM − CBM3D [dB] | -1.16 |" in markdown and "SMOKE" in markdown

    dip_metrics = next((tmp_path / "runs").rglob("dip_avg_20/metrics.json"))
    finished = dip_metrics.stat().st_mtime_ns
    dd.main(options)
    assert dip_metrics.stat().st_mtime_ns == finished  # the DIP runs were reused, not fitted again
    table = json.loads((tmp_path / "results" / "deep_decoder_denoising_cpu.json").read_text())
    quantities = [row["quantity"] for row in table["rows"]]
    assert "DD (k = 8) − DIP" in quantities and "DD (k = 8) − CBM3D" in quantities
    assert "DD 20 steps − DD 30 steps (notebook: astronaut)" in quantities
    assert all(row["ours"] is not None for row in table["rows"])

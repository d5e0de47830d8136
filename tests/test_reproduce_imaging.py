"""The reference presets (experiment=aseqdip_mri, aseqdip_ct, self_guided_mri, self_guided_ct) compose with the
references' values, and the two imaging reproduction commands run end to end at a tiny size and write their tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from untrained.run import compose

ROOT = Path(__file__).resolve().parents[1]
TINY_BASELINES = ["task.tv_max_iterations=50", "task.sirt_iterations=10", "task.cgls_iterations=5"]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        # Aseq_DIP_MRI.py: MediumUNet(2, 2), lr 1e-4, 6000 blocks × 10 steps, alpha 1, unsquared norms, 640 × 372
        (
            "aseqdip_mri",
            {
                "task.name": "mri",
                "task.size": [640, 372],
                "task.acceleration": 4,
                "method.name": "aseqdip",
                "method.lr": 1e-4,
                "method.inner_steps": 10,
                "method.ae_weight": 1.0,
                "method.loss": "norm",
                "method.data_consistency": "auto",
                "method.input.kind": "measurement",
                "trainer.max_steps": 60000,
                "network.channels_down": [64, 128, 256],
                "network.init_std": 0.02,
            },
        ),
        # Aseq_DIP_CT.py: MediumUNet(1, 1), lr 2e-4, 2000 blocks × 10, 30 angles, FBP input, no data consistency
        (
            "aseqdip_ct",
            {
                "task.name": "ct",
                "task.size": 512,
                "task.views": 30,
                "method.name": "aseqdip",
                "method.lr": 2e-4,
                "method.inner_steps": 10,
                "method.loss": "norm",
                "method.data_consistency": "never",
                "method.ae_weight": 8.2e-3,
                "trainer.max_steps": 20000,
                "network.channels_down": [64, 128, 256],
            },
        ),
        # Self-Guided DIP notebook: L1 terms, lr 3e-4 (θ) / 1e-1 (z), 320² crop, 4×
        (
            "self_guided_mri",
            {
                "task.name": "mri",
                "task.size": 320,
                "method.name": "self_guided",
                "method.norm": "l1",
                "method.lr": 3e-4,
                "method.input_lr": 0.1,
                "method.optimize_input": True,
                "method.guidance_weight": 2.74,
                "network.channels_down": [64, 128, 256],
            },
        ),
        (
            "self_guided_ct",
            {
                "task.name": "ct",
                "task.size": 256,
                "task.views": 18,
                "method.name": "self_guided",
                "method.lr": 3e-4,
                "method.input_lr": 0.1,
                "method.guidance_weight": 0.1,
                "network.channels_down": [64, 128, 256],
            },
        ),
    ],
)
def test_reference_preset_composes_with_the_reference_values(preset, expected):
    cfg = compose([f"experiment={preset}"])
    for key, value in expected.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert (list(node) if not isinstance(node, (str, int, float, bool)) else node) == value, key
    # the preset lives in experiments/configs/ and cites the reference it reproduces
    text = (ROOT / "experiments" / "configs" / f"{preset}.yaml").read_text()
    assert "github.com/sjames40/" in text and "Run: python train.py experiment=" + preset in text


def test_preset_values_yield_to_the_command_line():
    cfg = compose(["experiment=aseqdip_ct", "task.size=64", "task.views=18", "trainer.max_steps=7"])
    assert (cfg.task.size, cfg.task.views, cfg.trainer.max_steps, cfg.method.lr) == (64, 18, 7, 2e-4)


def test_tutorial_fig5_writes_its_table(tmp_path):
    from experiments.reproduce import tutorial_fig5

    tutorial_fig5.main(
        [
            "--threads",
            "1",
            "--runs",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
            "--tasks",
            "ct",
            "--methods",
            "dip",
            "tv_dip",
            "aseqdip",
            "--override",
            "task.size=32",
            "trainer.max_steps=12",
            *TINY_BASELINES,
        ]
    )
    table = json.loads((tmp_path / "results" / "tutorial_fig5_cpu.json").read_text())
    rows = {row["quantity"]: row for row in table["rows"]}
    assert rows["CT 18 views: FBP (converged baseline)"]["ours"] > 10
    assert rows["CT 18 views: aSeqDIP best PSNR"]["ours"] > 10
    assert "CT 18 views: DIP + ES-WMV at the detected step" in rows
    target = rows["CT 18 views: aSeqDIP best − FBP (issue target ≥ 8)"]
    assert target["ours"] == pytest.approx(
        rows["CT 18 views: aSeqDIP best PSNR"]["ours"] - rows["CT 18 views: FBP (converged baseline)"]["ours"]
    )
    assert target["verdict"] in ("target met", "target NOT met")
    assert table["data"]["runs"]["ct"]["aseqdip"]["steps"] == 12
    assert "| quantity | paper | ours |" in (tmp_path / "results" / "tutorial_fig5_cpu.md").read_text()


@pytest.mark.slow
def test_reference_presets_writes_its_table(tmp_path):
    from experiments.reproduce import reference_presets

    reference_presets.main(
        [
            "--threads",
            "1",
            "--runs",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
            "--override",
            "task.size=32",
            "trainer.max_steps=10",
        ]
    )
    table = json.loads((tmp_path / "results" / "reference_presets_cpu.json").read_text())
    runs = table["data"]["runs"]
    assert set(runs) == {"aseqdip_mri", "aseqdip_ct", "self_guided_mri", "self_guided_ct"}
    assert all(run["steps"] == 10 and run["status"] == "completed" for run in runs.values())
    quantities = [row["quantity"] for row in table["rows"]]
    assert "aSeqDIP, MRI 4× (Aseq_DIP_MRI.py): best − CG-SENSE" in quantities


def test_reference_presets_one_preset_writes_its_table(tmp_path):
    from experiments.reproduce import reference_presets

    reference_presets.main(
        [
            "--threads",
            "1",
            "--runs",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
            "--presets",
            "aseqdip_ct",
            "--override",
            "task.size=32",
            "trainer.max_steps=10",
            *TINY_BASELINES,
        ]
    )
    table = json.loads((tmp_path / "results" / "reference_presets_cpu.json").read_text())
    rows = {row["quantity"]: row for row in table["rows"]}
    best = rows["aSeqDIP, CT (Aseq_DIP_CT.py): best PSNR"]["ours"]
    assert best > 10 and table["data"]["runs"]["aseqdip_ct"]["task_info"] is not None
    assert rows["aSeqDIP, CT (Aseq_DIP_CT.py): best − FBP"]["verdict"].startswith("FBP ")


def test_aseqdip_inpainting_follows_its_script():
    # Aseq_DIP_inpainting.py: Adam lr 3e-4, N = 2, λ = 1, MSE terms, the new input the raw network output
    method = compose(["task=inpainting", "method=aseqdip"]).method
    assert (method.lr, method.inner_steps, method.ae_weight, method.loss) == (3e-4, 2, 1.0, "mse")
    assert method.data_consistency == "never"

"""Uncertainty maps (docs/uncertainty.md): ensembles and MC dropout write mean/std maps and calibration metrics on
every task; identical members give a zero std; the std grows with the noise; MC dropout's passes are made at the
chosen iterate; the calibration functions give the known answers; a resumed ensemble run ends as an uninterrupted
one."""

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from scipy.stats import rankdata, spearmanr

from untrained.callbacks.checkpoint import RunInterrupted
from untrained.errors import UserError
from untrained.metrics import calibration, ranks, spearman, uncertainty_calibration_error
from untrained.run import assemble, build
from untrained.train import train

TINY = ["trainer.max_steps=10", "module.log_every=5"]
KEYS = [
    "uncertainty_mean_psnr",
    "uncertainty_mean_ssim",
    "uncertainty_std_mean",
    "uncertainty_spearman_pixels",
    "uncertainty_spearman_blocks",
    "uncertainty_uce",
    "uncertainty_coverage_2std",
]
# A stopping rule that fires within a few steps (window 3, patience 3, checked every step).
QUICK_RULE = [
    "callbacks=es_wmv",
    "callbacks.early_stopping.window=3",
    "callbacks.early_stopping.patience=3",
    "callbacks.early_stopping.check_every=1",
    "~callbacks.progress_bar",
    "~callbacks.images",
]


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def check_maps(run_dir: Path, metrics: dict, kind: str, samples: int) -> np.ndarray:
    for name in ("mean.npy", "mean.png", "std.npy", "std.png", "error_vs_std.png", "reconstruction.npy"):
        assert (run_dir / name).is_file(), name
    assert metrics["uncertainty"] == kind and metrics["uncertainty_samples"] == samples
    for key in KEYS:
        assert key in metrics and metrics[key] is not None and math.isfinite(metrics[key]), key
    assert metrics["reconstruction"] == f"{kind}_mean"
    assert math.isfinite(metrics["reconstruction_psnr"])
    std = np.load(run_dir / "std.npy")
    assert std.shape == np.load(run_dir / "mean.npy").shape and (std >= 0).all()
    assert metrics["uncertainty_std_mean"] > 0
    return std


# Every task ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["denoising", "inpainting", "deblurring", "super_resolution", "mri", "ct"])
def test_ensemble_writes_maps_and_metrics_on_every_task(make_cfg, task):
    cfg = make_cfg([f"task={task}", *TINY, "uncertainty=ensemble", "uncertainty.members=2"])
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    std = check_maps(run_dir, metrics, "ensemble", 2)
    assert len(metrics["uncertainty_member_psnr"]) == len(metrics["uncertainty_member_best_psnr"]) == 2
    assert all(
        b >= c - 1e-9 for b, c in zip(metrics["uncertainty_member_best_psnr"], metrics["uncertainty_member_psnr"])
    )
    # One measurement for all members (the task's noise drawn once), different fits.
    measurements = [np.load(run_dir / f"member_{b}" / "measurement.npy") for b in range(2)]
    assert np.array_equal(*measurements)
    members = [np.load(run_dir / f"member_{b}" / "reconstruction.npy") for b in range(2)]
    assert np.allclose(np.load(run_dir / "reconstruction.npy"), (members[0] + members[1]) / 2, atol=1e-6)
    assert read(run_dir)["uncertainty_uce"] == metrics["uncertainty_uce"]
    if task == "denoising":  # images in [0, 1]: the mean of the displayed samples is the displayed mean
        assert metrics["reconstruction_psnr"] == pytest.approx(metrics["uncertainty_mean_psnr"], abs=1e-3)
    if task == "mri":  # the magnitude inside the coil support: zero outside it
        module = assemble(cfg, logger=False).members[0]
        support = (module.problem.operator.support.expand(1, 1, *std.shape[-2:])[0, 0] > 0).numpy()
        assert (std[~support] == 0).all() and (std[support] > 0).any()
        assert (run_dir / "reconstruction_complex.npy").is_file()
    if task == "ct":  # also in attenuation units
        attenuation = np.load(run_dir / "std_attenuation.npy")
        assert attenuation.shape == std.shape[-2:] and (attenuation > 0).any()
        assert (run_dir / "reconstruction_attenuation.npy").is_file()


@pytest.mark.parametrize("task", ["denoising", "inpainting", "deblurring", "super_resolution", "mri", "ct"])
def test_mc_dropout_writes_maps_and_metrics(make_cfg, task):
    cfg = make_cfg([f"task={task}", *TINY, "uncertainty=mc_dropout", "uncertainty.passes=4"])
    metrics = train(cfg)
    check_maps(Path(cfg.paths.output_dir), metrics, "mc_dropout", 4)


# Zero std, growing std --------------------------------------------------------------------------------------------
def test_identical_members_have_zero_std(make_cfg):
    cfg = make_cfg(
        [*TINY, "uncertainty=ensemble", "uncertainty.members=3", "uncertainty.seed_stride=0", "batching.mode=loop"]
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["uncertainty_std_mean"] == 0 and not np.load(run_dir / "std.npy").any()
    assert metrics["uncertainty_coverage_2std"] == 0  # no error is within a zero std
    members = [np.load(run_dir / f"member_{b}" / "reconstruction.npy") for b in range(3)]
    assert all(np.array_equal(members[0], m) for m in members[1:])


def test_mc_dropout_without_dropout_has_zero_std(make_cfg):
    cfg = make_cfg([*TINY, "uncertainty=mc_dropout", "uncertainty.dropout=0", "uncertainty.passes=3"])
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["uncertainty_std_mean"] == 0 and not np.load(run_dir / "std.npy").any()
    # No rule ran: the passes are made at the final weights, i.e. the final iterate's output
    assert np.allclose(np.load(run_dir / "reconstruction.npy"), np.load(run_dir / "final.npy"), atol=1e-6)


def test_ensemble_std_grows_with_the_noise_level(make_cfg):
    found = {}
    for sigma in (5, 50):
        cfg = make_cfg(
            [f"task.sigma={sigma}", "trainer.max_steps=100", "uncertainty=ensemble", "uncertainty.members=2"],
            subdir=f"sigma{sigma}",
        )
        found[sigma] = train(cfg)["uncertainty_std_mean"]
    assert found[50] > 1.5 * found[5] > 0


# MC dropout at the chosen iterate ---------------------------------------------------------------------------------
def test_mc_dropout_passes_are_made_at_the_stopping_rules_step(make_cfg):
    """Without dropout the passes reproduce the network's output at the rule's step exactly (es.npy: the raw output
    the rule watched), not the final weights': the weights kept are those of that step's forward pass."""
    cfg = make_cfg(
        ["trainer.max_steps=30", *QUICK_RULE, "uncertainty=mc_dropout", "uncertainty.dropout=0", "uncertainty.passes=2"]
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["es_stopped"] and metrics["es_step"] < metrics["steps"] - 1
    chosen = np.load(run_dir / "reconstruction.npy")
    assert np.allclose(chosen, np.load(run_dir / "es.npy"), atol=1e-6)
    assert not np.allclose(chosen, np.load(run_dir / "final.npy"), atol=1e-4)
    assert metrics["reconstruction_psnr"] == pytest.approx(metrics["es_psnr"], abs=1e-4)


def test_mc_dropout_passes_are_made_at_the_held_out_rules_step(make_cfg):
    cfg = make_cfg(
        [
            "trainer.max_steps=30",
            "callbacks=es_holdout",
            "callbacks.early_stopping.patience=3",
            "callbacks.early_stopping.check_every=1",
            "~callbacks.progress_bar",
            "~callbacks.images",
            "uncertainty=mc_dropout",
            "uncertainty.dropout=0",
            "uncertainty.passes=2",
        ]
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["holdout_step"] < metrics["steps"] - 1
    assert np.allclose(np.load(run_dir / "reconstruction.npy"), np.load(run_dir / "holdout.npy"), atol=1e-6)


def test_dropout_zero_is_the_network_as_before(make_cfg):
    for network in ("skip", "unet", "deep_decoder"):
        cfg = make_cfg([f"network={network}"], fast=False)
        plain = dict(cfg.network)
        plain.pop("dropout")
        kwargs = {"in_channels": 3, "out_channels": 1}
        before, zero = build(plain, "network", **kwargs), build(cfg.network, "network", **kwargs)
        with_dropout = build({**plain, "dropout": 0.3}, "network", **kwargs)
        assert list(before.state_dict()) == list(zero.state_dict())
        assert not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in zero.modules())
        assert any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in with_dropout.modules())
        count = [sum(p.numel() for p in n.parameters()) for n in (before, zero, with_dropout)]
        assert count[0] == count[1] == count[2]


# Refused combinations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["uncertainty=ensemble", "batching.size=2"], "uncertainty=ensemble maps one measurement"),
        (["uncertainty=ensemble", "batching.indices=[0,1]"], "uncertainty=ensemble maps one measurement"),
        (["uncertainty=ensemble", "uncertainty.members=1"], "uncertainty.members"),
        (["uncertainty=mc_dropout", "batching.size=2"], "uncertainty=mc_dropout maps one measurement"),
        (["uncertainty=mc_dropout", "uncertainty.dropout=1.0"], "uncertainty.dropout"),
        (["uncertainty=mc_dropout", "network=unrolled_pg", "task=deblurring"], "needs a network with a dropout"),
        (["uncertainty=mc_dropout", "method=drp", "network=drp"], "use uncertainty=ensemble"),
        (["uncertainty.kind=bayes"], "uncertainty.kind"),
        (["uncertainty=mc_dropout", "callbacks=es_holdout", "callbacks.early_stopping.refit=true"], "refit=false"),
    ],
)
def test_nonsense_combinations_are_refused(make_cfg, overrides, message):
    from tests.conftest import QUIET_CPU

    own_network = any(o.startswith("network=") for o in overrides)  # the fast setting's widths are the skip net's
    cfg = make_cfg([*QUIET_CPU, "task.size=32", *overrides], fast=False) if own_network else make_cfg(overrides)
    with pytest.raises(UserError, match=message):
        assemble(cfg, logger=False)


# Calibration on synthetic inputs ------------------------------------------------------------------------------
def test_calibration_functions_give_known_answers():
    generator = torch.Generator().manual_seed(0)
    std = 0.01 + 0.1 * torch.rand(1, 64, 64, generator=generator)
    # |error| = std everywhere: variance = squared error in every bin, a monotone relation
    exact = calibration(std.clone(), std)
    assert exact["uce"] == pytest.approx(0, abs=1e-15)
    assert exact["spearman_pixels"] == pytest.approx(1) and exact["spearman_blocks"] == pytest.approx(1)
    assert exact["coverage_2std"] == 1
    assert calibration(3 * std, std)["coverage_2std"] == 0
    assert calibration(std.square(), std)["spearman_pixels"] == pytest.approx(1)  # any monotone function
    assert calibration(-std, std)["spearman_pixels"] == pytest.approx(1)  # |error|
    # Gaussian errors of the predicted std: calibrated up to sampling (UCE small against the mean variance), about
    # 95% within 2 std; a std 3 times too small is far off.
    error = torch.randn(1, 256, 256, generator=generator) * (std := 0.01 + 0.1 * torch.rand(1, 256, 256))
    found = calibration(error, std)
    assert found["uce"] < 0.05 * float(std.square().mean())
    assert found["coverage_2std"] == pytest.approx(0.954, abs=0.01)
    assert calibration(error, std / 3)["uce"] > 0.5 * float(std.square().mean())
    # The UCE by hand: two bins, |B|/n · |MSE − var|
    assert uncertainty_calibration_error(torch.tensor([1.0, 1.0, 4.0, 0.0]), torch.tensor([1.0, 1.0, 3.0, 3.0]), 2) == (
        pytest.approx(0.5 * 0 + 0.5 * 1)
    )
    # Ranks with ties, and Spearman, as scipy computes them
    values = torch.randint(0, 6, (200,), generator=generator).double()
    other = torch.randn(200, generator=generator, dtype=torch.float64)
    assert np.allclose(ranks(values).numpy(), rankdata(values.numpy()))
    assert spearman(values, other) == pytest.approx(spearmanr(values, other).statistic)
    assert math.isnan(spearman(torch.ones(10), other[:10]))


def test_calibration_counts_only_pixels_inside_the_mask():
    std = torch.full((1, 16, 16), 0.1)
    error = std.clone()
    error[:, :8] = 5.0  # outside the mask: ignored
    mask = torch.zeros(1, 16, 16)
    mask[:, 8:] = 1
    found = calibration(error, std, mask)
    assert found["coverage_2std"] == 1 and found["uce"] == pytest.approx(0, abs=1e-15)


# Checkpoint and resume ------------------------------------------------------------------------------------------
RESUMED = ["trainer.max_steps=12", "module.log_every=5", "method.reg_noise_std=0.05"]


@pytest.mark.parametrize(
    "kind, options, interrupt",
    [
        # a batched fit: the signal after a Lightning batch (its steps are not single-fit steps)
        ("ensemble", ["uncertainty.members=2"], "tests.test_interrupt.SignalAfterBatch"),
        # the weights kept at the rule's step are in the checkpoint: the resumed run makes its passes there too
        ("mc_dropout", ["uncertainty.passes=3"], "tests.test_resume.SignalAtStep"),
    ],
)
def test_uncertainty_run_resumes_to_the_same_maps(make_cfg, tmp_path_factory, kind, options, interrupt):
    from tests.conftest import compose_config

    setting = [*RESUMED, f"uncertainty={kind}", *options, *QUICK_RULE]
    reference = tmp_path_factory.mktemp(f"{kind}_uninterrupted")
    expected = train(compose_config(setting, reference))
    cfg = make_cfg(setting)
    with open_dict(cfg):
        cfg.callbacks.preempt = {"_target_": interrupt, "step": 7, "signum": int(signal.SIGUSR2)}
    with pytest.raises(RunInterrupted):
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    resumed = train(make_cfg(setting))
    for key in [*KEYS, "uncertainty_member_psnr", "reconstruction_psnr", "es_step"]:
        assert resumed.get(key) == expected.get(key), key
    for name in ("mean.npy", "std.npy", "reconstruction.npy"):
        assert np.array_equal(np.load(reference / name), np.load(run_dir / name)), name

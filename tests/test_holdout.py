"""Stopping by held-out measurements (callbacks=es_holdout, docs/holdout.md): the split hides the held-out entries
from everything the fit uses, the rule fires where the held-out misfit is lowest, and it works batched, resumed and
with a refit."""

import copy
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from tests.conftest import compose_config
from untrained.callbacks.checkpoint import RunInterrupted
from untrained.errors import UserError
from untrained.operators.base import LinearOperator, adjointness_error
from untrained.operators.generators.coils import acs_columns
from untrained.run import assemble, build, fit
from untrained.train import train

HOLDOUT = ["callbacks=es_holdout", "~callbacks.progress_bar", "~callbacks.images"]
SMALL_NET = ["network.channels_down=[8,8]", "network.channels_up=[8,8]", "network.channels_skip=[2,2]"]
TASKS = {
    "denoising": [],
    "inpainting": [],
    "deblurring": [],
    "super_resolution": [],
    "ct": ["task.views=8"],
    "mri": [],
    "integration_1d": ["task.size=32"],
    "deconvolution_1d": ["task.size=32"],
}


def task_problem(task: str, extra=()):
    cfg = compose_config([f"task={task}", *TASKS[task], *extra])
    return build(cfg.task, "task")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_split_operator_is_adjoint_and_hides_the_held_out_entries(task):
    problem = task_problem(task)
    y = problem.y.clone()
    problem.hold_out(0.2, seed=3)
    assert isinstance(problem.operator, LinearOperator)
    assert adjointness_error(problem.operator) < 1e-4
    held = problem.held_mask.expand_as(y).bool()
    assert held.any() and not problem.y[held].abs().any()  # y keeps none of the held-out values
    assert torch.equal(problem.held_y[held], y[held]) and torch.equal(problem.y[~held], y[~held])
    assert problem.holdout["held_entries"] == int(held.sum())
    # The data loss is a mean over the fitted entries; the held-out misfit over the held-out ones.
    x = torch.rand(1, *problem.image_shape)
    fitted = problem.operator.inner(problem.to_domain(x)) - y
    expected = torch.view_as_real(fitted) if fitted.is_complex() else fitted
    squares = expected.square().sum(-1) if fitted.is_complex() else expected.square()
    assert torch.allclose(problem.data_loss(x), squares[~held].mean(), rtol=1e-4)
    assert torch.allclose(problem.held_out_misfit(x), squares[held].mean(), rtol=1e-4)


def test_image_measurements_hold_out_whole_pixels_and_inpainting_only_observed_ones():
    problem = task_problem("denoising")
    problem.hold_out(0.1)
    assert problem.held_mask.shape == (1, 1, 32, 32)  # one choice for all channels of a pixel
    assert abs(problem.holdout["fraction"] - 0.1) < 0.01
    inpainting = task_problem("inpainting")
    observed = inpainting.operator.mask.bool()
    inpainting.hold_out(0.5)
    assert not (inpainting.held_mask.bool() & ~observed).any()


def test_the_mri_split_keeps_the_calibration_centre_and_takes_only_sampled_locations():
    problem = task_problem("mri")
    sampled = problem.operator.mask.bool()
    start, stop = acs_columns(sampled[sampled.shape[0] // 2])
    assert stop - start >= 2
    problem.hold_out(0.5, seed=1)
    held = problem.held_mask[0, 0].bool()
    assert held.shape == sampled.shape  # one location holds all coils' samples
    assert held.any() and not (held & ~sampled).any()
    assert not held[:, start:stop].any()


def test_pixel_cells_hold_out_one_pixel_per_cell_and_only_for_denoising():
    problem = task_problem("denoising")
    problem.hold_out(0.1, seed=0, pattern="cells")
    cells = problem.held_mask[0, 0].reshape(16, 2, 16, 2).sum((1, 3))
    assert torch.equal(cells, torch.ones(16, 16))
    assert problem.holdout["fraction"] == 0.25
    for task in ("mri", "ct", "deblurring"):
        with pytest.raises(UserError, match="pattern=random"):
            task_problem(task).hold_out(0.1, pattern="cells")


def fitted_estimate(cfg, problem) -> torch.Tensor:
    run = assemble(cfg, logger=False, problem=problem)
    outcome = fit(run)
    assert outcome.crash is None
    return run.members[0].estimate.detach().clone()


@pytest.mark.parametrize(
    "task,method",
    [("denoising", "vanilla"), ("mri", "vanilla"), ("ct", "vanilla"), ("denoising", "aseqdip")],
)
def test_no_leak_held_out_values_do_not_change_the_fit(make_cfg, task, method):
    """Whatever the held-out entries of y hold, the fit's trajectory is the same, bit for bit."""
    cfg = make_cfg([f"task={task}", *TASKS[task], f"method={method}", "trainer.max_steps=6", *HOLDOUT, *SMALL_NET])
    if method == "aseqdip":  # builds its input from A^H y
        with open_dict(cfg):
            cfg.method.lr = 0.01
    problem = build(cfg.task, "task")
    probe = copy.deepcopy(problem)
    probe.hold_out(0.1)  # the split the run will draw (the default fraction and seed)
    altered = copy.deepcopy(problem)
    noise = torch.randn(altered.y.shape, generator=torch.Generator().manual_seed(5)).to(altered.y.dtype)
    altered.y = altered.y + probe.held_mask * noise
    assert not torch.equal(altered.y, problem.y)
    first, second = fitted_estimate(cfg, problem), fitted_estimate(cfg, altered)
    assert torch.equal(first, second)
    assert problem.holdout is None  # the caller's problem keeps all its measurements


def test_the_rule_fires_on_an_overfitting_denoising_run(make_cfg):
    cfg = make_cfg(
        [
            *HOLDOUT,
            "trainer.max_steps=300",
            "callbacks.early_stopping.stop_training=false",
            "callbacks.early_stopping.patience=40",
        ]
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["holdout_stopped"] and metrics["holdout_step"] < metrics["holdout_stop_step"] < 300
    assert metrics["steps"] == 300
    # The chosen image beats the noisy input by far, and the run went on to overfit past it.
    assert metrics["holdout_psnr"] > metrics["baseline_noisy_psnr"] + 1.5
    assert metrics["final_psnr"] < metrics["holdout_psnr"] - 1
    assert metrics["reconstruction"] == "holdout" and metrics["reconstruction_psnr"] == metrics["holdout_psnr"]
    assert metrics["holdout_gap"] == pytest.approx(metrics["best_psnr"] - metrics["holdout_psnr"])
    assert metrics["holdout_pattern"] == "random" and 0.09 < metrics["holdout_fraction"] < 0.11
    assert metrics["holdout_residual"] > 0
    assert np.array_equal(np.load(run_dir / "holdout.npy"), np.load(run_dir / "reconstruction.npy"))
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["holdout_residual"]) == 300


def test_batched_members_equal_single_fits(make_cfg):
    steps = [*HOLDOUT, "trainer.max_steps=30", "callbacks.early_stopping.patience=5", *SMALL_NET]
    batched = make_cfg([*steps, "batching.size=2", "batching.mode=loop"], subdir="batched")
    train(batched)
    single = make_cfg([*steps, "seed=1"], subdir="single")
    train(single)
    member = Path(batched.paths.output_dir) / "member_1"
    a = json.loads((member / "metrics.json").read_text())
    b = json.loads((Path(single.paths.output_dir) / "metrics.json").read_text())
    for key in ("holdout_step", "holdout_stopped", "holdout_stop_step", "holdout_psnr", "holdout_residual"):
        assert a[key] == b[key], key
    assert np.array_equal(np.load(member / "holdout.npy"), np.load(Path(single.paths.output_dir) / "holdout.npy"))


def test_resume_continues_the_same_curve_minimum_and_patience(make_cfg):
    setting = [*HOLDOUT, "trainer.max_steps=12", "module.log_every=5", *SMALL_NET]
    setting += ["callbacks.early_stopping.patience=3", "callbacks.early_stopping.check_every=1"]
    reference = make_cfg(setting, subdir="reference")
    train(reference)
    cfg = make_cfg(setting)
    with open_dict(cfg):
        cfg.callbacks.preempt = {"_target_": "tests.test_resume.SignalAtStep", "step": 5, "signum": signal.SIGUSR2}
    with pytest.raises(RunInterrupted):
        train(cfg)
    train(make_cfg(setting))
    a, b = Path(reference.paths.output_dir), Path(cfg.paths.output_dir)
    skip = {"wall_time_s", "seconds_per_step"}
    metrics_a, metrics_b = (
        {k: v for k, v in json.loads((d / "metrics.json").read_text()).items() if k not in skip} for d in (a, b)
    )
    assert metrics_a == metrics_b
    history_a, history_b = (json.loads((d / "history.json").read_text()) for d in (a, b))
    assert history_a["holdout_residual"] == history_b["holdout_residual"]
    assert np.array_equal(np.load(a / "holdout.npy"), np.load(b / "holdout.npy"))


def test_refit_fits_all_measurements_to_the_chosen_step(make_cfg):
    cfg = make_cfg([*HOLDOUT, "trainer.max_steps=40", "callbacks.early_stopping.refit=true", *SMALL_NET])
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    refit = json.loads((run_dir / "refit" / "metrics.json").read_text())
    assert refit["steps"] == metrics["holdout_step"] + 1 and "holdout_step" not in refit
    assert metrics["reconstruction"] == "holdout_refit"
    assert metrics["holdout_refit_psnr"] == refit["final_psnr"] and metrics["holdout_refit_ssim"] == refit["final_ssim"]
    assert np.array_equal(np.load(run_dir / "reconstruction.npy"), np.load(run_dir / "refit" / "final.npy"))
    assert json.loads((run_dir / "metrics.json").read_text())["holdout_refit_psnr"] == metrics["holdout_refit_psnr"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["callbacks.early_stopping.fraction=0.6"], "fraction must be in"),
        (["callbacks.early_stopping.fraction=0"], "fraction must be in"),
        (["callbacks.early_stopping.pattern=stripes"], "pattern must be one of"),
        (["callbacks.early_stopping.pattern=cells", "task=mri"], "pattern=random"),
        (["callbacks.early_stopping.fraction=0.0001"], "holds out no measurement"),
        (["callbacks.early_stopping.smoothing=1"], "smoothing must be in"),
        (["callbacks.early_stopping.refit=true", "batching.size=2"], "refit"),
        (["method=adp", "task=integration_1d", "task.size=32"], "method=adp"),
    ],
)
def test_bad_options_are_one_line_user_errors(make_cfg, overrides, message):
    cfg = make_cfg([*HOLDOUT, "trainer.max_steps=2", *overrides])
    with pytest.raises(UserError, match=message) as error:
        train(cfg)
    assert "\n" not in str(error.value)

"""Preemption-safe runs: a run stopped by a signal resumes and ends bit-for-bit like an uninterrupted one;
diverging runs fail cleanly; W&B online without network fails fast. A SIGTERM from outside the process
(`scontrol requeue`) and the resumed job in a new process are tested against the real SLURM in test_slurm.py."""

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from untrained.callbacks.base import StepCallback
from untrained.callbacks.checkpoint import RunInterrupted
from untrained.errors import UserError
from untrained.train import train, wandb_run_ids

# Small, and every piece of state that resuming must carry: RNG per step (input noise), the output average,
# best-iterate tracking every other step, host records pending between flushes (log_every = 5).
SETTING = [
    "trainer.max_steps=12",
    "module.log_every=5",
    "module.eval_every=2",
    "method.reg_noise_std=0.05",
    "method.exp_weight=0.9",
    "network.channels_down=[8,8]",
    "network.channels_up=[8,8]",
    "network.channels_skip=[2,2]",
]
TIMING = {"wall_time_s", "seconds_per_step"}


class SignalAtStep(StepCallback):
    """Sends this process a real signal once ``step`` optimizer steps are done, as SLURM would at any time
    (here inside a Lightning batch of module.log_every = 5 steps: the run must stop after the current step)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, trainer, module, step: int):
        if step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


def outputs(run_dir: Path) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return (
        {k: v for k, v in metrics.items() if k not in TIMING},
        json.loads((run_dir / "history.json").read_text()),
        np.load(run_dir / "final.npy"),
        np.load(run_dir / "best.npy"),
    )


def assert_same_run(a: Path, b: Path) -> None:
    metrics_a, history_a, final_a, best_a = outputs(a)
    metrics_b, history_b, final_b, best_b = outputs(b)
    assert metrics_a == metrics_b
    assert history_a == history_b and history_a["step"] == list(range(12))
    assert np.array_equal(final_a, final_b) and np.array_equal(best_a, best_b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config(SETTING, run_dir))
    return run_dir


def test_signal_checkpoints_and_resume_is_bit_for_bit(make_cfg, uninterrupted, tmp_path):
    cfg = make_cfg(SETTING)
    with open_dict(cfg):
        cfg.callbacks = {
            "preempt": {"_target_": "tests.test_resume.SignalAtStep", "step": 7, "signum": int(signal.SIGUSR2)}
        }
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    assert stopped.value.code == 128 + signal.SIGUSR2
    run_dir = Path(cfg.paths.output_dir)
    interrupted = json.loads((run_dir / "metrics.json").read_text())  # what the run had, overwritten on resume
    assert (interrupted["status"], interrupted["interrupted_by"], interrupted["steps"]) == ("interrupted", "SIGUSR2", 7)
    assert json.loads((run_dir / "history.json").read_text())["step"] == list(range(7))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 7
    assert {"method.z", "method.average", "tracker.best_image", "tracker.best_psnr"} <= set(checkpoint["state_dict"])
    assert checkpoint["optimizer_states"] and checkpoint["untrained"]["histories"][0]["step"] == list(range(7))
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers are given back after the fit
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    train(make_cfg(SETTING))  # the same run directory: resumes from last.ckpt
    assert_same_run(uninterrupted, run_dir)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # removed once the outputs are written


def test_resume_with_several_steps_per_batch_is_bit_for_bit(make_cfg, uninterrupted):
    """Interrupted at a batch of 4 steps, resumed with batches of 3: still the uninterrupted run."""
    cfg = make_cfg(SETTING + ["module.steps_per_batch=4"])
    with open_dict(cfg):
        cfg.callbacks = {
            "preempt": {"_target_": "tests.test_resume.SignalAtStep", "step": 8, "signum": int(signal.SIGUSR2)}
        }
    with pytest.raises(RunInterrupted):
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    train(make_cfg(SETTING + ["module.steps_per_batch=3"]))
    assert_same_run(uninterrupted, run_dir)


def test_periodic_checkpoints_fall_on_their_steps_inside_batches(make_cfg, uninterrupted, caplog):
    """checkpoint.every_n_steps=3 with batches of log_every = 5 steps: saved after steps 3, 6 and 9 (the batch
    is cut there), and the run is still the uninterrupted one."""
    cfg = make_cfg(SETTING + ["checkpoint.every_n_steps=3"])
    with caplog.at_level("INFO", logger="untrained.callbacks.checkpoint"):
        train(cfg)
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().startswith("Checkpoint at")] == [
        "Checkpoint at step 3",
        "Checkpoint at step 6",
        "Checkpoint at step 9",
    ]
    assert_same_run(uninterrupted, Path(cfg.paths.output_dir))


@pytest.mark.parametrize("rule", ["WindowedVarianceStopping", "ExponentialVarianceStopping"])
def test_resume_keeps_the_early_stopping_state(make_cfg, rule):
    """The ES-WMV window / ES-EMV averages, minimum and patience travel in the checkpoint (callback state_dict)."""
    stopping = {
        "_target_": f"untrained.callbacks.early_stopping.{rule}",
        "patience": 3,
        "stop_training": False,
        "check_every": 2,
        **({"window": 3} if rule.startswith("Windowed") else {"start": 2}),
    }
    runs = {}
    for name, extra in (
        ("uninterrupted", {}),
        (
            "resumed",
            {"preempt": {"_target_": "tests.test_resume.SignalAtStep", "step": 6, "signum": int(signal.SIGTERM)}},
        ),
    ):
        cfg = make_cfg(SETTING, subdir=name)
        with open_dict(cfg):
            cfg.callbacks = {"early_stopping": stopping, **extra}
        if extra:
            with pytest.raises(RunInterrupted):
                train(cfg)
            with open_dict(cfg):
                del cfg.callbacks["preempt"]
        runs[name] = train(cfg)
    assert runs["resumed"]["es_step"] is not None
    assert {k: v for k, v in runs["resumed"].items() if k not in TIMING} == {
        k: v for k, v in runs["uninterrupted"].items() if k not in TIMING
    }


def test_diverging_run_fails_and_keeps_its_best_iterate(make_cfg):
    cfg = make_cfg(SETTING[:1] + SETTING[5:] + ["method.lr=1e30", "module.log_every=1"])
    metrics = train(cfg)
    assert metrics["status"] == "failed" and "the loss became nan at step 1" in metrics["failure"]
    assert metrics["steps"] == 2 and metrics["best_step"] == 0 and np.isfinite(metrics["best_psnr"])
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["status"] == "failed" and written["best_psnr"] == metrics["best_psnr"]
    assert np.isfinite(np.load(Path(cfg.paths.output_dir) / "best.npy")).all()


def test_wandb_offline_writes_a_syncable_run(make_cfg):
    cfg = make_cfg(SETTING[:1] + SETTING[5:] + ["trainer.max_steps=2", "logger=wandb"])
    train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_wandb_online_without_network_fails_fast(make_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.invalid")  # never resolves, with or without a network
    cfg = make_cfg(["logger=wandb", "logger.offline=false"])
    start = time.monotonic()
    with pytest.raises(UserError, match="unreachable.*logger.offline=true"):
        train(cfg)
    assert time.monotonic() - start < 30


def test_batched_fit_checkpoints_and_resumes_bit_for_bit(make_cfg, tmp_path_factory):
    """B = 2 fits in one optimizer step, with each member's stopping rule: a signal checkpoints the stacked state,
    the optimizer, the members' records and rules; resumed, every member ends as in the uninterrupted fit."""
    from tests.conftest import compose_config
    from tests.test_interrupt import SignalAfterBatch

    batched = SETTING + [
        "batching.size=2",
        "callbacks=es_wmv",
        "callbacks.early_stopping.window=3",
        "callbacks.early_stopping.patience=4",
        "callbacks.early_stopping.check_every=1",
        "~callbacks.progress_bar",
    ]
    reference = tmp_path_factory.mktemp("batched_uninterrupted")
    train(compose_config(batched, reference))
    cfg = make_cfg(batched)
    with open_dict(cfg):
        cfg.callbacks.preempt = {"_target_": "tests.test_interrupt.SignalAfterBatch", "step": 7, "signum": 12}
    assert SignalAfterBatch(7, signal.SIGUSR2).signum == int(signal.SIGUSR2) == 12
    with pytest.raises(RunInterrupted):
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 7 and len(checkpoint["untrained"]["histories"]) == 2
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"

    train(make_cfg(batched))  # the same run directory: resumes from last.ckpt
    for member in ("member_0", "member_1"):
        assert_same_run(reference / member, run_dir / member)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_interrupted_and_resumed_run_is_one_wandb_run(make_cfg):
    """The second attempt continues the first's W&B run (same id, resume="allow"), not a new one."""
    setting = SETTING[:1] + SETTING[5:] + ["logger=wandb"]
    cfg = make_cfg(setting)
    with open_dict(cfg):
        cfg.callbacks = {"preempt": {"_target_": "tests.test_resume.SignalAtStep", "step": 4, "signum": 12}}
    with pytest.raises(RunInterrupted):
        train(cfg)
    train(make_cfg(setting))
    run_dir = Path(cfg.paths.output_dir)
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2, attempts
    assert wandb_run_ids(run_dir) == {(run_dir / ".wandb_id").read_text().strip()}


def test_wandb_run_ids_read_attempts_started_in_the_same_second(tmp_path):
    for folder in ("offline-run-20261130_230018-20d82b6b", "offline-run-20261130_230018-20d82b6b-1", "latest-run"):
        (tmp_path / "wandb" / folder).mkdir(parents=True)
    assert wandb_run_ids(tmp_path) == {"20d82b6b"}


def test_signal_during_start_up_requeues_before_any_step(make_cfg):
    """A signal noted before the fit (libraries, data, W&B still loading): the run exits with 128 + signal at its
    next safe point, having written nothing, so that the requeued job starts clean."""
    from untrained.callbacks import preemption

    previous = {s: signal.getsignal(s) for s in preemption.SLURM_SIGNALS}
    try:
        preemption.LATCH.install()
        os.kill(os.getpid(), signal.SIGTERM)  # noted by the latch, as during start-up
        cfg = make_cfg(SETTING)
        with pytest.raises(RunInterrupted) as stopped:
            train(cfg)
        assert stopped.value.code == 128 + signal.SIGTERM
        assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
        assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
    finally:
        preemption.LATCH.received = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        preemption.LATCH.installed = False


def test_requeued_attempt_after_completion_hands_back_the_run(make_cfg, monkeypatch, caplog):
    """SLURM requeued a job whose run had completed (a signal while it wrote its outputs): the next attempt returns
    the completed run's metrics instead of fitting again."""
    cfg = make_cfg(SETTING)
    first = train(cfg)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with caplog.at_level("INFO", logger="untrained.train"):
        again = train(make_cfg(SETTING))
    assert again == json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert again["best_psnr"] == first["best_psnr"] and "completed in an earlier attempt" in caplog.text
    changed = make_cfg(SETTING[1:] + ["trainer.max_steps=13"])  # another config in that directory fits again
    assert train(changed)["steps"] == 13

"""Ctrl-C and SIGTERM do not lose a run: a real `python train.py`, signalled while training, finishes its step, saves
a checkpoint and writes everything it has (status: interrupted), exits with 128 + the signal, and the command it
prints resumes it to the uninterrupted run's result, bit for bit on the CPU. Ctrl-C before training ends with one
line and exit 130; a second Ctrl-C stops a saving run at once.

The signals go to the run's process group, as a terminal sends Ctrl-C."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import open_dict

from tests.conftest import FAST, FAST_BASELINES, compose_config
from untrained.callbacks.checkpoint import RunInterrupted
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 150
# Tiny, with a reporting callback (ES-WMV: its entries and es.npy are part of what an interrupted run writes)
# and periodic checkpoints, whose log line tells that the run is training.
SETTING = [
    "network.channels_down=[8,8]",
    "network.channels_up=[8,8]",
    "network.channels_skip=[2,2]",
    f"trainer.max_steps={MAX_STEPS}",
    "checkpoint.every_n_steps=10",
    "callbacks=es_wmv",
    "~callbacks.progress_bar",
    "~callbacks.images",
    "callbacks.early_stopping.window=5",
    "callbacks.early_stopping.check_every=5",
    "callbacks.early_stopping.stop_training=false",
    # conftest's fast setting for the in-process runs' baselines, given to the train.py processes too
    *(
        f"task.{key}={str(value).lower()}"
        for key, value in FAST_BASELINES.items()
        if key in ("bm3d", "tv_max_iterations")
    ),
]
TRAINING = "Checkpoint at step 10:"
TIMING = {"wall_time_s", "seconds_per_step"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


class TrainProcess:
    """``python <arguments>`` in the repository, in its own process group (as a shell runs it), output collected."""

    def __init__(self, arguments: list[str]):
        self.process = subprocess.Popen(
            [sys.executable, *arguments],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for(self, text: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not self.logged(text):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.reader.join(timeout=10)
                if not self.logged(text):
                    pytest.fail(f"the run never logged {text!r}:\n{self.output[-3000:]}")
            time.sleep(0.01)

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def finish(self, seconds: float = 120) -> int:
        try:
            code = self.process.wait(timeout=seconds)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(timeout=10)
        return code


def outputs(run_dir: Path) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return (
        {k: v for k, v in metrics.items() if k not in TIMING},
        np.load(run_dir / "final.npy"),
        np.load(run_dir / "best.npy"),
        json.loads((run_dir / "history.json").read_text()),
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config(SETTING, run_dir))
    return run_dir


def interrupt(signum: int, overrides: list[str], run_dir: Path) -> TrainProcess:
    """Run ``train.py`` in ``run_dir``, send ``signum`` once it trains, and check what the stopped run left."""
    run = TrainProcess(["train.py", *overrides, f"hydra.run.dir={run_dir}"])
    run.wait_for(TRAINING)
    run.signal(signum)
    assert run.finish() == 128 + signum, run.output[-3000:]
    assert "Traceback" not in run.output

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["interrupted_by"] == signal.Signals(signum).name
    assert 10 <= metrics["steps"] < MAX_STEPS and "es_stopped" in metrics  # with the reporting callback's entries
    for name in ("best.npy", "final.npy", "es.npy", "best.png", "final.png", "history.json", "psnr_curve.png"):
        assert (run_dir / name).is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert history["step"] == list(range(metrics["steps"]))  # every step done, none left pending
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == metrics["steps"]
    return run


@pytest.mark.slow  # the `python train.py` processes take ~10 s each on a busy 2-core CPU
def test_sigterm_stops_after_the_step_and_writes_everything(tmp_path):
    """``kill`` or a shutdown outside SLURM (its resume is the same as Ctrl-C's; test_resume.py resumes one in
    process)."""
    interrupt(signal.SIGTERM, [*FAST, *SETTING], tmp_path)


@pytest.mark.slow
def test_ctrl_c_writes_everything_and_the_printed_command_resumes_it_exactly(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    run = interrupt(signal.SIGINT, [*FAST, "logger=csv", *SETTING], run_dir)  # later overrides win
    assert (run_dir / "csv" / "metrics.csv").is_file()  # the logger was finalised

    command = next(line.split("Resume with: ", 1)[1] for line in run.lines if "Resume with: " in line)
    program = shlex.split(command)
    assert program[:2] == ["python", "train.py"] and program[-1] == f"hydra.run.dir={run_dir}"
    resumed = TrainProcess(program[1:])
    assert resumed.finish() == 0, resumed.output[-3000:]
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed.output

    metrics, final, best, history = outputs(run_dir)
    expected_metrics, expected_final, expected_best, expected_history = outputs(uninterrupted)
    assert metrics["status"] == "completed" and metrics["steps"] == MAX_STEPS and "interrupted_by" not in metrics
    assert np.array_equal(final, expected_final) and np.array_equal(best, expected_best)
    assert history == expected_history and metrics == expected_metrics
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_ctrl_c_before_training_prints_one_line_and_exits_130(tmp_path):
    """Ctrl-C while the task still reads its image (a FIFO nobody writes: a stalled file system): nothing to save."""
    image = tmp_path / "stalled.png"
    os.mkfifo(image)
    run = TrainProcess(["train.py", *FAST, f"task.image={image}", f"hydra.run.dir={tmp_path / 'run'}"])
    deadline = time.monotonic() + 120
    while True:  # opening the write end succeeds once the run has opened the image for reading
        try:
            writer = os.open(image, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if run.process.poll() is not None or time.monotonic() > deadline:
                run.process.kill()
                pytest.fail(f"the run never opened its image:\n{run.output[-3000:]}")
            time.sleep(0.01)
    try:
        run.signal(signal.SIGINT)
        assert run.finish() == 130, run.output[-3000:]
    finally:
        os.close(writer)
    assert "Stopped by Ctrl-C." in run.output and "Traceback" not in run.output
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(tmp_path):
    """The first Ctrl-C asks for a save after the current step; a second one ends the process without it."""
    run = TrainProcess(
        [
            "train.py",
            *FAST,
            *SETTING[:3],
            "trainer.max_steps=100000",
            "checkpoint.every_n_steps=10",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    run.wait_for(TRAINING)
    run.signal(signal.SIGINT)
    run.wait_for("Ctrl-C: saving the run")
    run.signal(signal.SIGINT)
    # Killed by the signal (inside the step or the save), or, once the fit has ended, stopped by KeyboardInterrupt.
    code = run.finish(seconds=30)
    assert code in (-signal.SIGINT, 130), run.output[-3000:]
    assert "Traceback" not in run.output
    if code == -signal.SIGINT:
        assert not (tmp_path / "metrics.json").exists()


class SignalAfterBatch(L.Callback):
    """Sends this process a real signal after Lightning batch ``step`` (a batched fit does one step per batch)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_interrupted_batched_fit_writes_every_member(make_cfg):
    """Batched fits are not checkpointed, but Ctrl-C still leaves every member's outputs (status: interrupted)."""
    cfg = make_cfg(["trainer.max_steps=12", "batching.size=2", *SETTING[:3]])
    with open_dict(cfg):
        cfg.callbacks = {
            "interrupt": {"_target_": "tests.test_interrupt.SignalAfterBatch", "step": 5, "signum": int(signal.SIGINT)}
        }
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    assert stopped.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert (summary["status"], summary["interrupted_by"], summary["steps"]) == ("interrupted", "SIGINT", 5)
    for b in range(2):
        member = json.loads((run_dir / f"member_{b}" / "metrics.json").read_text())
        assert (member["status"], member["interrupted_by"], member["steps"]) == ("interrupted", "SIGINT", 5)
        assert json.loads((run_dir / f"member_{b}" / "history.json").read_text())["step"] == list(range(5))
        assert (run_dir / f"member_{b}" / "best.npy").is_file() and (run_dir / f"member_{b}" / "final.npy").is_file()

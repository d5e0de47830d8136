"""Shared fixtures: compose the real Hydra config with small, fast CPU settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from untrained.run import compose

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The test problems are tiny: intra-op threads gain nothing, and on a busy shared CPU their spinning makes
# each step hundreds of times slower (measured: 5 ms with 1 thread vs 1 s with 2 at load 16).
torch.set_num_threads(1)

# A quiet CPU run: no progress bar, no logger, fp32 NCHW (auto would turn bf16 on for CPUs with AMX only: the
# tests' numbers must not depend on the CPU they run on).
QUIET_CPU = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
    "performance.autocast=false",
    "performance.channels_last=false",
]
# The small CPU setting of most tests: 32×32 images and a 3-scale skip net.
FAST = [
    "task.size=32",
    *QUIET_CPU,
    "network.channels_down=[16,16,16]",
    "network.channels_up=[16,16,16]",
    "network.channels_skip=[4,4,4]",
]


# Baseline settings of the fast setting, for the tasks that have them (see compose_config).
FAST_BASELINES = {
    "bm3d": False,
    "nlm": False,
    "tv_max_iterations": 50,
    "sirt_iterations": 10,
    "cgls_iterations": 5,
    "l1_iterations": 20,
}


def compose_config(overrides: list[str] | None = None, output_dir: Path | None = None, fast: bool = True):
    """The config ``python train.py`` would run (``run.compose``), with the tests' small settings first."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=/tmp/untrained-test"]
    cfg = compose((FAST if fast else []) + extra + list(overrides or []), CONF_DIR)
    # The classical baselines run to their stopping rules when a task is built (seconds for CT's TV, SIRT and CGLS
    # even at 32 px); the fast setting leaves BM3D out and caps the iterative ones, unless a test sets them
    # (tests/test_baselines.py, test_denoising.py and test_sparse_mri.py check the baselines themselves).
    if fast:
        for key, value in FAST_BASELINES.items():
            if key in cfg.task and not any(str(o).startswith(f"task.{key}") for o in overrides or []):
                cfg.task[key] = value
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(overrides, fast=True) → a composed config writing into tmp_path/run."""

    def factory(overrides=None, fast: bool = True, subdir: str = "run"):
        return compose_config(overrides, tmp_path / subdir, fast)

    return factory


@pytest.fixture(autouse=True)
def signal_handlers_are_given_back():
    """Every fit gives back the signal handlers it installed (a leaked Ctrl-C handler would swallow Ctrl-C)."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    yield
    after = {s: signal.getsignal(s) for s in before}
    leaked = {signal.Signals(s).name: after[s] for s in before if after[s] is not before[s]}
    assert not leaked, f"signal handlers left installed: {leaked}"

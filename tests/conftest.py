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


def compose_config(overrides: list[str] | None = None, output_dir: Path | None = None, fast: bool = True):
    """The config ``python train.py`` would run (``run.compose``), with the tests' small settings first."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=/tmp/untrained-test"]
    cfg = compose((FAST if fast else []) + extra + list(overrides or []), CONF_DIR)
    # BM3D costs seconds per image whatever its size; the fast setting leaves the denoising baseline out unless a
    # test asks for it (tests/test_denoising.py does).
    if fast and "bm3d" in cfg.task and not any(str(o).startswith("task.bm3d") for o in overrides or []):
        cfg.task.bm3d = False
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

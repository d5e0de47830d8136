"""Bad inputs stop before training with one-line messages that name the fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from untrained.errors import UserError
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.image=/no/such/file.png"], "does not exist"),
        (["task.image=not_a_builtin"], "Unknown built-in image"),
        (["task.sigma=-1"], "must be >= 0"),
        (["task.size=4"], "task.size: the image \\(4x4\\) is too small for the network"),
        (["task.size=8", "network.pad=zero"], "leaves one pixel at the network's coarsest scale"),
        (["task=integration_1d"], "network is 2D but the task's signals are 1D"),
        (["+method.no_such_option=1"], "Invalid method option"),
        (["method.exp_weight=1.5"], "exp_weight"),
    ],
)
def test_user_errors(make_cfg, overrides, message):
    with pytest.raises(UserError, match=message):
        train(make_cfg(overrides))


def test_unreadable_image(make_cfg, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="Cannot read image"):
        train(make_cfg([f"task.image={bad}"]))


def test_cli_prints_one_line_and_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "task.sigma=-3", "logger=none", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "task.sigma must be >= 0" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "override,message",
    [
        ("performance.batch_size=4", "performance.batch_size was renamed: use batching.size"),
        ("task.tv_steps=100", "use task.tv_max_iterations"),
        ("method.tv_reduction=sum", "method.tv_reduction was removed"),
    ],
)
def test_renamed_options_name_their_new_name(override, message):
    from untrained.run import compose

    with pytest.raises(UserError, match=message):
        compose([override])


def test_a_moved_target_names_its_new_module(make_cfg):
    cfg = make_cfg([])
    cfg.task._target_ = "untrained.data.denoising.denoising"
    with pytest.raises(UserError, match="use untrained.tasks.denoising.denoising"):
        train(cfg)


def test_cli_names_a_renamed_option_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "performance.batch_size=2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "performance.batch_size was renamed: use batching.size."

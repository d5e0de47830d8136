"""Every config group option composes and instantiates."""

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config

GROUPS = ["task", "network", "method", "trainer", "logger", "callbacks", "paths", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"], fast=False)
    OmegaConf.to_container(cfg, resolve=False)
    assert cfg.task.name and cfg.method.name


def test_unknown_option_is_rejected():
    with pytest.raises(MissingConfigException, match="method"):
        compose_config(["method=does_not_exist"])


def test_default_experiment_is_dip_denoising_of_builtin_image():
    cfg = compose_config(fast=False)
    assert (cfg.task.name, cfg.method.name, cfg.task.image, cfg.task.sigma) == (
        "denoising",
        "vanilla",
        "astronaut",
        25.0,
    )
    assert cfg.method.lr == 0.01 and cfg.trainer.max_steps == 3000


@pytest.mark.parametrize(
    "overrides,stops",
    [
        ([], True),  # python train.py: denoising stops by itself (conf/task_callbacks/denoising.yaml)
        (["callbacks=default"], False),  # an explicit choice wins
        (["callbacks=none"], False),
        (["task=mri"], False),  # other tasks run all their steps
        (["experiment=dip_denoising"], False),  # the paper's protocol: all 3000 steps
    ],
)
def test_the_default_denoising_run_stops_by_itself(overrides, stops):
    from untrained.run import compose

    rule = OmegaConf.select(compose(overrides), "callbacks.early_stopping")
    assert (rule is not None and rule.stop_training) == stops
    if stops:
        assert rule._target_.endswith("WindowedVarianceStopping") and rule.patience <= 300 and rule.average > 0

"""Educated DIP: stage 1 learns FBP → image on synthetic ellipses and saves the weights; stage 2 starts from them."""

import pytest
import torch

from untrained.errors import UserError
from untrained.methods.edip import CHECKPOINT_NAME
from untrained.run import build_module
from untrained.train import train

CT = ["task=ct", "task.size=32", "task.views=12", "task.tv_max_iterations=0"]


pytestmark = pytest.mark.slow  # every test here needs the module's pre-training run (about a minute)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny stage-1 run: its metrics and run directory."""
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("edip_pretrain")
    cfg = compose_config(
        CT
        + [
            "method=edip_pretrain",
            "method.batch_size=2",
            "trainer.max_steps=80",
            "method.lr=3e-3",
            "module.log_every=1",
        ],
        run_dir,
    )
    return train(cfg), run_dir


def test_pretraining_learns_and_saves_the_network(pretrained):
    metrics, run_dir = pretrained
    history = metrics_history(run_dir)
    losses = history["supervised_loss"]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # fresh phantoms each step: it generalises, not memorises
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    # The pre-trained network on the real (Shepp-Logan) FBP improves on its untrained output.
    assert history["psnr"][-1] > history["psnr"][0]


def test_finetuning_starts_from_the_pretrained_weights(pretrained, make_cfg):
    _, run_dir = pretrained
    saved = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    cfg = make_cfg(CT + ["method=edip", f"method.checkpoint={run_dir}", "trainer.max_steps=5"])
    module = build_module(cfg)
    loaded = module.network.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(module.method.z, module.problem.init)  # input = the task's FBP
    metrics = train(cfg)
    assert metrics["status"] == "completed" and "tv" in metrics_history(cfg.paths.output_dir)


def test_checkpoint_errors(pretrained, make_cfg, tmp_path):
    _, run_dir = pretrained
    with pytest.raises(UserError, match="edip_pretrain first"):
        build_module(make_cfg(CT + ["method=edip"]))
    with pytest.raises(UserError, match="does not exist"):
        build_module(make_cfg(CT + ["method=edip", f"method.checkpoint={tmp_path}/missing.pt"]))
    with pytest.raises(UserError, match="another network"):
        build_module(make_cfg(CT + ["method=edip", f"method.checkpoint={run_dir}", "network.channels_down=[8,8,8]"]))


def metrics_history(run_dir) -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(run_dir) / "history.json").read_text())

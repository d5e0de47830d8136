"""network=unet: the references' variants, their initialisation, every 2D task, the methods' default network."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from untrained.networks.skip import SkipNet
from untrained.networks.unet import UNet
from untrained.run import assemble, compose, member_config
from untrained.train import train

# A small U-Net on the tests' FAST settings (which set channels_down/up/skip to three levels of 16).
SMALL_UNET = ["network=unet", "network.channels_bottom=16", "network.init=normal"]


def build(name: str, in_channels: int, out_channels: int) -> UNet:
    return instantiate(compose([f"network={name}"]).network, in_channels=in_channels, out_channels=out_channels)


def count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


# Counted once (not in the tests) by instantiating each reference class from the mirrored repositories at HEAD:
# sjames40/Aseq_DIP unet/medium_unet.py MediumUNet(2, 2): 14,906,050 parameters, of which forward uses
# 4,283,842 (those that receive a gradient; down4 and up1 are built but never called);
# unet/unet_shallow.py UNet(3, 3): 1,036,995 (all used);
# jleuschn/dival dival/reconstructors/networks/unet.py UNet(1, 1, [128] * 4, [4] * 4): 1,791,933;
# educating-dip/educated_deep_image_prior src/deep_image_prior/network/unet.py UNet(1, 1, [128] * 6,
# [0, 0, 0, 0, 4, 4], use_sigmoid=False): 2,973,880, less the three dead 1×1 skip convs (128 + 1 weights and bias,
# 2 GroupNorm) whose output is multiplied by 0: 2,973,880 − 3 × 131 = 2,973,487.
@pytest.mark.parametrize(
    "name, channels, parameters",
    [
        ("unet_medium", 2, 4_283_842),
        ("unet_shallow", 3, 1_036_995),
        ("unet_dival", 1, 1_791_933),
        ("unet_edip", 1, 2_973_487),
    ],
)
def test_reference_variants_have_the_references_parameter_counts(name, channels, parameters):
    assert count(build(name, channels, channels)) == parameters


def test_normal_init_is_the_references_init_weights():
    """init_weights(net, 'normal', 0.02): conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    torch.manual_seed(0)
    net = build("unet_medium", 2, 2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 3 * 2 + 3 * 2 + 2 + 1 and len(norms) == 14  # inc, 3 downs, 3 ups (2 each), head
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    gammas = torch.cat([m.weight for m in norms])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.005) and gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert all((m.bias == 0).all() for m in convs + norms)
    default = build("unet", 2, 2)  # torch's default: uniform with a fan-in bound, biases not zero
    first = default.inc[0][0][0]
    assert first.weight.std().item() > 0.1 and (first.bias != 0).any()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"upsample": "transposed", "norm": "instance", "act": "LeakyReLU", "channels_up_mid": "half"},
        {"upsample": "nearest", "upsample_conv": True, "norm": "none", "downsample": "avgpool", "sigmoid": True},
        {"skip": "project", "channels_skip": [0, 2, 2], "norm": "group", "merge_norm": True, "zero_skip_channel": True},
        {"skip": "none", "downsample": "stride", "in_convs": 1, "pad": "reflection"},
        {"channels_skip": [0, 8, 0], "channels_up_mid": 4, "kernel_size": 5},
    ],
)
def test_unet_options_take_any_size(options):
    net = UNet(3, 2, [8, 8, 8], [8, 8, 8], **options)
    net.fit_to((2, 37, 45))
    out = net(torch.rand(1, *net.input_shape((2, 37, 45))))
    assert out.shape == (1, 2, 37, 45) and torch.isfinite(out).all()
    if options.get("sigmoid"):
        assert ((out >= 0) & (out <= 1)).all()
    signal = UNet(2, 1, [4, 4], [4, 4], dim=1, **{k: v for k, v in options.items() if k != "channels_skip"})
    signal.fit_to((1, 50))
    assert signal(torch.rand(1, *signal.input_shape((1, 50)))).shape == (1, 1, 50)


def test_channels_last_unet_gives_the_nchw_gradients():
    torch.manual_seed(0)
    net = UNet(4, 2, [8, 16, 16], [8, 8, 16])
    z = torch.rand(1, 4, 32, 32)
    net(z).square().sum().backward()
    nchw = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.to(memory_format=torch.channels_last)
    net(z.contiguous(memory_format=torch.channels_last)).square().sum().backward()
    scale = max(g.abs().max() for g in nchw)
    for expected, got in zip(nchw, (p.grad for p in net.parameters()), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)


TASKS = {  # small settings of the slower tasks
    "denoising": [],
    "deblurring": [],
    "inpainting": [],
    "super_resolution": [],
    "mri": ["task.coils=4", "task.cg_iterations=2"],
    "ct": ["task.views=12", "task.tv_max_iterations=2", "task.sirt_iterations=2", "task.cgls_iterations=2"],
    "nonlinear_deblurring": [],
    "semi_blind_deblurring": [],
}


@pytest.mark.parametrize("task", list(TASKS))
def test_unet_runs_on_every_2d_task_at_an_odd_size(make_cfg, task):
    # super-resolution: multiples of its factor; CT: square images
    size = {"super_resolution": (36, 44), "ct": (37, 37)}.get(task, (37, 45))
    cfg = make_cfg(
        [f"task={task}", f"task.size=[{size[0]},{size[1]}]", *SMALL_UNET, *TASKS[task], "trainer.max_steps=3"]
    )
    assert cfg.network._target_ == "untrained.networks.unet.UNet"
    metrics = train(cfg)
    assert metrics["status"] == "completed", metrics.get("failure")
    final = np.load(f"{cfg.paths.output_dir}/final.npy")
    assert final.shape[1:] == size and math.isfinite(metrics["final_psnr"])


@pytest.mark.parametrize(
    "overrides, network, target",
    [
        (["method=aseqdip", "task=mri"], "unet_medium", UNet),
        (["method=aseqdip", "task=ct"], "unet_medium", UNet),
        (["method=aseqdip", "task=denoising"], "unet_shallow", UNet),
        (["method=aseqdip", "task=deblurring"], "unet_shallow", UNet),
        (["method=self_guided", "task=mri"], "unet_medium", UNet),
        (["method=aseqdip", "task=inpainting"], "skip", SkipNet),  # the inpainting script fits a skip net
        (["method=vanilla", "task=mri"], "skip", SkipNet),
        (["method=aseqdip", "task=mri", "network=skip"], "skip", SkipNet),  # an explicit choice wins
        (["method=aseqdip", "task=mri", "network=unet_dival"], "unet_dival", UNet),
    ],
)
def test_methods_default_to_their_references_network(overrides, network, target):
    cfg = compose([*overrides, "logger=none"])
    expected = compose([*overrides, f"network={network}", "logger=none"])
    assert cfg.network == expected.network
    assert type(instantiate(cfg.network, in_channels=2, out_channels=2)) is target
    if "task=mri" in overrides:
        assert cfg.network.sigmoid is False  # MRI channels can be negative (unet_medium has none; skip_mri.yaml)


def test_train_py_uses_the_methods_network_and_saves_that_config(tmp_path):
    """python train.py method=aseqdip task=denoising composes again with the shallow U-Net and writes that config."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    run = subprocess.run(
        [
            sys.executable,
            "train.py",
            "method=aseqdip",
            "task=denoising",
            "task.size=32",
            "trainer.max_steps=2",
            "logger=none",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
            f"paths.output_dir={tmp_path}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert saved.network._target_ == "untrained.networks.unet.UNet" and saved.method_network.name == "unet_shallow"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_batched_loop_fit_of_the_unet_is_bit_for_bit_the_separate_runs(make_cfg, tmp_path):
    cfg = make_cfg(
        [*SMALL_UNET, "trainer.max_steps=4", "seed=3", "module.log_every=2", "batching.size=2", "batching.mode=loop"],
        subdir="loop",
    )
    batched = train(cfg)
    for b in range(2):
        run = assemble(member_config(cfg, b), logger=False)
        run.trainer.fit(run.module)
        run.signals.restore_handlers()
        history = json.loads((tmp_path / "loop" / f"member_{b}" / "history.json").read_text())
        assert history["loss"] == run.module.history["loss"] and history["psnr"] == run.module.history["psnr"]
        assert batched["members"][b]["best_psnr"] == run.module.summary()["best_psnr"]

"""Deep decoder, Optimal Eye Surgeon, double over-parameterization, Deep Random Projector, DeepRED."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.util import random_noise
from torch import nn

from untrained.methods.deepred import DeepRED, NonLocalMeans
from untrained.methods.dop import DoubleOverParameterization
from untrained.networks.deep_decoder import DeepDecoder
from untrained.networks.skip import SkipNet
from untrained.operators.base import Identity
from untrained.problem import InverseProblem
from untrained.run import build_module
from untrained.tasks.images import load_image
from untrained.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = (
    ["denoising"]
    + (["mri"] if (CONF / "task" / "mri.yaml").exists() else [])
    + (["ct"] if (CONF / "task" / "ct.yaml").exists() else [])
)
TASK_SIZES = {
    "denoising": ["task.size=32"],
    "mri": ["task.size=32", "task.coils=4", "task.cg_iterations=2"],
    "ct": ["task.size=32", "task.tv_max_iterations=5"],
}
SMALL_DECODER = ["network.channels=16", "network.blocks=3", "method.input.channels=16"]
SMALL_DRP = ["network.channels_down=[8]", "network.channels_up=[8]", "network.channels_skip=[2]"]
# FAST (conftest) sets skip-net widths; the deep decoder and DRP runs use these instead.
QUIET = [
    "task.size=32",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
]


def fit(method, network, problem, steps: int, start: int = 0) -> list[float]:
    """The module's per-step protocol without Lightning: optimization_step then after_step."""
    optimizer = method.configure_optimizer(network)
    losses = []
    for step in range(start, start + steps):
        out = method.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
        method.after_step(network, problem, step, out)
        losses.append(float(out.loss.detach()))
    return losses


# Deep decoder -----------------------------------------------------------------------------------
def test_deep_decoder_has_the_papers_parameter_count_and_input_size():
    net = DeepDecoder(128, 3, channels=128, blocks=6)
    assert sum(p.numel() for p in net.parameters()) == 6 * (128 * 128 + 2 * 128) + 128 * 3 == 100_224
    assert net.input_shape((3, 512, 512)) == (128, 16, 16)  # H / 2^(d−1)
    small = DeepDecoder(8, 1, channels=8, blocks=3)
    out = small(torch.rand(1, *small.input_shape((1, 24, 32))))
    assert out.shape == (1, 1, 24, 32) and (0 <= out).all() and (out <= 1).all()


def test_deep_decoder_fits_an_image_as_small_as_its_upsampling(make_cfg):
    """A 1×1 input is fine for the deep decoder (it normalises after upsampling), unlike the skip net's
    coarsest scale (test_errors.py)."""
    metrics = train(
        make_cfg(
            QUIET
            + [
                "method=deep_decoder",
                "trainer.max_steps=2",
                "network.channels=8",
                "network.blocks=6",
                "method.input.channels=8",
            ],
            fast=False,
        )
    )
    assert metrics["status"] == "completed"


def test_deep_decoder_method_selects_its_network_and_denoises(make_cfg):
    cfg = make_cfg(QUIET + ["method=deep_decoder", "trainer.max_steps=30", *SMALL_DECODER], fast=False)
    assert cfg.network._target_.endswith("DeepDecoder") and cfg.method.lr == 0.01
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["best_psnr"] > 15


# Optimal Eye Surgeon ------------------------------------------------------------------------------
def test_oes_learns_a_mask_of_the_requested_sparsity_and_pruned_weights_stay_zero(make_cfg, tmp_path):
    module = build_module(make_cfg(["method=oes", "method.mask_steps=3", "method.sparsity=0.1", "method.lr=0.05"]))
    method, network, problem = module.method, module.network, module.problem
    initial = {name: p.detach().clone() for name, p in network.named_parameters()}
    logits_before = method.logits.detach().clone()
    fit(method, network, problem, 3)  # stage 1: only the logits move
    assert not torch.equal(method.logits, logits_before)
    assert all(torch.equal(p, initial[name]) for name, p in network.named_parameters())
    assert float(method.mask.sum()) == 0  # no mask yet
    fit(method, network, problem, 4, start=3)  # stage 2 (a fresh optimizer, as after a resume)
    total = method.mask.numel()
    assert float(method.mask.sum()) == int(0.1 * total)
    masks = method.unflatten(method.mask)  # the convolution kernels (method.prune=weights)
    assert set(masks) == {name for name, p in network.named_parameters() if p.dim() >= 2}
    params = dict(network.named_parameters())
    for name, mask in masks.items():
        assert (params[name][mask == 0] == 0).all(), name
    assert any(not torch.equal(params[n][m == 1], initial[n][m == 1]) for n, m in masks.items())  # survivors train
    assert any(not torch.equal(params[n], initial[n]) for n in params if n not in masks)  # dense BN, biases train

    # Resuming in stage 2 (a checkpoint's state in a fresh module) keeps the trained weights: no second pruning.
    resumed = build_module(make_cfg(["method=oes", "method.mask_steps=3", "method.sparsity=0.1"], subdir="resumed"))
    resumed.load_state_dict(module.state_dict())
    frozen_step = torch.optim.SGD(resumed.network.parameters(), lr=0.0)
    resumed.method.optimization_step(resumed.network, resumed.problem, 7, frozen_step, lambda loss: loss.backward())
    assert resumed.method.pruned
    assert all(torch.equal(p, q) for p, q in zip(resumed.network.parameters(), network.parameters()))

    # The mask transfers: a new run on another image starts at stage 2 from m ⊙ θ₀.
    method.write_outputs(tmp_path, problem)
    reused = build_module(
        make_cfg(["method=oes", f"method.mask={tmp_path / 'mask.pt'}", "task.image=chelsea"], subdir="reuse")
    )
    assert reused.method.pruned and torch.equal(reused.method.mask, method.mask)
    for name, p in reused.network.named_parameters():
        assert torch.equal(p, initial[name] * masks[name] if name in masks else initial[name])


def test_oes_runs_end_to_end_and_saves_its_mask(make_cfg, tmp_path):
    metrics = train(make_cfg(["method=oes", "method.mask_steps=4", "trainer.max_steps=8"]))
    saved = torch.load(tmp_path / "run" / "mask.pt")
    assert metrics["status"] == "completed"
    assert float(saved["mask"].float().sum()) == int(0.05 * saved["mask"].numel())


# Double over-parameterization ---------------------------------------------------------------------
def test_dop_separates_salt_and_pepper_corruption(tmp_path):
    torch.manual_seed(0)
    clean = load_image("astronaut", 32, None, 0)
    corrupted = torch.from_numpy(random_noise(clean[0].numpy(), mode="s&p", amount=0.1, rng=0).astype(np.float32))[None]
    problem = InverseProblem(
        "salt_and_pepper", Identity(tuple(clean.shape[1:])), corrupted, tuple(clean.shape[1:]), x_true=clean
    )
    # Discrepant rates: SGD lr 1 for θ; for 3·32² measurements the corruption needs a smaller lr than the
    # reference's 500 (at 3·512², the loss being a mean) and, to be quick, a larger start than 1e-5.
    method = DoubleOverParameterization(
        lr=1.0, optimizer="sgd", corruption_lr=100.0, corruption_init=1e-3, reg_noise_std=1 / 30
    )
    network = SkipNet(32, 3, [16] * 3, [16] * 3, [4] * 3)
    method.setup(problem, network)
    fit(method, network, problem, 120)
    injected = corrupted - clean
    recovered = method.corruption().detach()
    captured = 1 - float(((recovered - injected) ** 2).sum() / (injected**2).sum())
    assert captured > 0.6
    estimate = network(method.z).detach()
    assert float(problem.psnr(estimate)) > float(problem.psnr(corrupted)) + 3
    method.write_outputs(tmp_path, problem)
    assert np.load(tmp_path / "corruption.npy").shape == (3, 32, 32) and (tmp_path / "corruption.png").exists()


# Deep Random Projector ----------------------------------------------------------------------------
def test_drp_trains_batch_norms_and_input_but_leaves_every_convolution_unchanged(make_cfg):
    module = build_module(make_cfg(QUIET + ["method=drp", *SMALL_DRP], fast=False))
    method, network, problem = module.method, module.network, module.problem
    assert isinstance(network, SkipNet) and method.z.shape == (1, 3, 32, 32)
    convs = {n: p.detach().clone() for n, p in network.named_parameters() if ".weight" in n or ".bias" in n}
    state = {n: p.detach().clone() for n, p in network.named_parameters()}
    z, norm = method.z.detach().clone(), method.input_norm.weight.detach().clone()
    fit(method, network, problem, 3)
    conv_params = [
        (n, p)
        for m_name, m in network.named_modules()
        if isinstance(m, nn.Conv2d)
        for n, p in m.named_parameters(prefix=m_name)
    ]
    assert conv_params and all(torch.equal(p, state[n]) for n, p in conv_params)
    batch_norm = [(n, p) for n, p in network.named_parameters() if all(n != c for c, _ in conv_params)]
    assert batch_norm and all(not torch.equal(p, state[n]) for n, p in batch_norm)
    assert not torch.equal(method.z, z) and not torch.equal(method.input_norm.weight, norm)
    assert len(convs) == len(state)


# DeepRED ------------------------------------------------------------------------------------------
class CountingDenoiser:
    """Non-local means that counts its calls."""

    def __init__(self):
        self.nlm, self.calls = NonLocalMeans(sigma=3.0), 0

    def __call__(self, image):
        self.calls += 1
        return self.nlm(image)


def test_deepred_calls_the_denoiser_every_k_steps_and_its_loss_decreases(make_cfg):
    module = build_module(make_cfg(["method=deepred", "method.denoise_every=5", "method.lr=0.01"]))
    method, network, problem = module.method, module.network, module.problem
    assert isinstance(method, DeepRED) and isinstance(method.denoiser, NonLocalMeans)
    method.denoiser = CountingDenoiser()
    losses = fit(method, network, problem, 150)
    assert method.denoiser.calls == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    # The ADMM splitting converges: x (the RED step on D(x) and f_θ(z) + u) improves on the noisy image.
    assert 0 <= float(method.x.min()) and float(method.x.max()) <= 1
    assert float(problem.psnr(method.x)) > float(problem.psnr(problem.y))


# Every method end to end ---------------------------------------------------------------------------
METHODS = {  # method: (overrides, uses the conftest FAST skip-net settings)
    "deep_decoder": (SMALL_DECODER, False),
    "oes": (["method.mask_steps=2", "method.prune=all"], True),
    "dop": (["method.corruption_lr=10"], True),
    "drp": (SMALL_DRP, False),
    "deepred": (["method.denoise_every=2"], True),
}
# The deep decoder and OES have their own end-to-end denoising runs above.
RUNS = [(m, t) for t in TASKS for m in METHODS if not (t == "denoising" and m in ("deep_decoder", "oes"))]


@pytest.mark.parametrize("method, task", RUNS)
def test_methods_run_end_to_end(make_cfg, method, task):
    extra, fast = METHODS[method]
    overrides = [f"task={task}", *TASK_SIZES[task], f"method={method}", "trainer.max_steps=4", *extra]
    metrics = train(make_cfg(([] if fast else QUIET) + overrides, fast=fast))
    assert metrics["status"] == "completed" and metrics["steps"] == 4
    assert math.isfinite(metrics["final_psnr"])


def test_dop_runs_on_the_salt_and_pepper_task(make_cfg, tmp_path):
    metrics = train(
        make_cfg(
            [
                "task.noise=salt_pepper",
                "task.noise_level=0.3",
                "method=dop",
                "trainer.max_steps=4",
                "method.corruption_lr=10",
            ]
        )
    )
    assert metrics["status"] == "completed"
    assert np.load(tmp_path / "run" / "corruption.npy").shape == (3, 32, 32)

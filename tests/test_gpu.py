"""The GPU paths: every task and the graph-capturable methods on CUDA, the CUDA graph of the step against
eager fp32, and batched fits. Skipped without a CUDA device (CI has none); run on a GPU node with

    python -m pytest tests/test_gpu.py -q
"""

import math

import lightning as L
import pytest
import torch

from untrained.run import build_module
from untrained.speed.graph import StepGraph
from untrained.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# The GPU default (bf16 + channels-last with the graph), which the CPU tests' settings (conftest FAST) pin off.
GPU = [
    "trainer.accelerator=gpu",
    "performance.compile=false",
    "trainer.max_steps=40",
    "module.log_every=10",
    "performance.autocast=auto",
    "performance.channels_last=auto",
]


def fit(cfg):
    module = build_module(cfg)  # its step runner applies cfg.performance on the device
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=cfg.trainer.max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(module)
    return module, trainer


def test_cuda_graph_step_matches_eager_fp32(make_cfg):
    """Recording the step changes nothing but speed: step by step the same losses as the eager step (fp32).

    Only the first steps are compared, to 2%: capturable Adam orders its arithmetic differently and some
    backward kernels accumulate atomically, and Adam turns rounding-level differences of near-zero
    gradients into full-size steps (measured on an H100: up to 0.4% apart after 10 steps).
    """
    base = [
        "trainer.accelerator=gpu",
        "performance.compile=false",
        "trainer.max_steps=10",
        "module.log_every=1",
        "seed=3",
        "performance.autocast=false",
        "performance.channels_last=false",
        "task.size=64",
        "method.exp_weight=0.99",
    ]
    eager, _ = fit(make_cfg(base + ["performance.cuda_graphs=false"], subdir="eager"))
    graphed, trainer = fit(make_cfg(base + ["performance.cuda_graphs=true"], subdir="graph"))
    step = graphed.runner.step_fn
    assert isinstance(step, StepGraph) and step.graph is not None and not step.failed
    assert trainer.global_step == 10 and len(graphed.history["loss"]) == 10
    assert graphed.history["loss"][:5] == pytest.approx(eager.history["loss"][:5], rel=1e-3)  # measured: equal to 1e-3
    assert graphed.history["loss"] == pytest.approx(eager.history["loss"], rel=2e-2)
    assert graphed.history["psnr"] == pytest.approx(eager.history["psnr"], abs=0.1)


def test_graph_runs_take_log_every_steps_per_lightning_batch(make_cfg):
    module, trainer = fit(make_cfg(GPU + ["task.size=64"]))
    assert module.batch_steps() == 10 and trainer.global_step == 40  # auto: module.log_every = 10
    assert module.history["step"] == list(range(40)) and len(set(module.history["loss"])) == 40


@pytest.mark.parametrize(
    "task",
    [
        "denoising",
        "deblurring",
        "inpainting",
        "super_resolution",
        "mri",
        "ct",
        "semi_blind_deblurring",
        "nonlinear_deblurring",
    ],
)
def test_every_task_runs_on_the_gpu_fast_path(make_cfg, task):
    if task == "ct":
        pytest.importorskip("astra", reason="CT needs astra-toolbox (with its CUDA 12 runtime and cuFFT)")
    overrides = GPU + [f"task={task}", "task.size=64"]
    metrics = train(make_cfg(overrides))
    assert metrics["status"] == "completed" and metrics["steps"] == 40
    assert "cuda" in metrics["device"]
    assert math.isfinite(metrics["final_psnr"]) and metrics["best_psnr"] > 5
    assert metrics["performance"]["cuda_graphs"] == (task != "ct"), metrics["performance"]


def test_gpu_ray_transform_projects_cuda_tensors_in_place():
    """astra_cuda on torch-backed ODL spaces: CUDA tensors in and out, the astra_cpu figures, adjoint.
    (Not yet run: the GPU nodes used so far had no astra-toolbox; the tolerances are ASTRA's, not measured.)"""
    pytest.importorskip("astra", reason="CT needs astra-toolbox (with its CUDA 12 runtime and cuFFT)")
    from untrained.operators.base import adjointness_error
    from untrained.operators.ct import RayTransform

    gpu, cpu = RayTransform(64, 12, impl="astra_cuda").cuda(), RayTransform(64, 12, impl="astra_cpu")
    assert gpu.space.impl == "pytorch" and str(gpu.odl_device).startswith("cuda")
    x = torch.rand(2, 1, 64, 64)
    projected = gpu(x.cuda())
    assert projected.is_cuda
    # ASTRA's GPU and CPU projectors discretise the line integrals differently (a few per cent).
    assert torch.allclose(projected.cpu(), cpu(x), rtol=0.05, atol=0.05 * cpu(x).abs().max().item())
    assert adjointness_error(gpu) < 1e-2  # ASTRA's CUDA back-projector is close to, not exactly, the transpose


def test_torch_ray_transform_on_cuda_is_recorded_by_a_cuda_graph():
    """task.impl=torch on CUDA: cuSPARSE's sums give the CPU figures up to float rounding (its reduction order
    differs; 1e-4 relative is a guess to be replaced by the measured difference), the dot-product test still
    holds, and a CUDA graph records forward + adjoint with the eager result."""
    from untrained.operators.base import adjointness_error
    from untrained.operators.ct import TorchRayTransform

    cpu = TorchRayTransform(64, 12)
    gpu = TorchRayTransform(64, 12).cuda()
    assert gpu.matrix.is_cuda and gpu.transpose.is_cuda
    x = torch.rand(2, 1, 64, 64)
    projected = gpu(x.cuda())
    reference = cpu(x)
    assert float((projected.cpu() - reference).norm() / reference.norm()) < 1e-4
    assert adjointness_error(gpu) < 1e-5
    static = x.cuda()
    eager = gpu.adjoint(gpu(static))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            gpu.adjoint(gpu(static))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        recorded = gpu.adjoint(gpu(static))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.allclose(recorded, eager, rtol=1e-4, atol=1e-6)


def test_ct_with_the_torch_ray_transform_records_the_step(make_cfg):
    """CT with task.impl=torch takes the whole fast path (CUDA graph), which astra_cuda cannot."""
    metrics = train(make_cfg(GPU + ["task=ct", "task.size=64", "task.impl=torch"]))
    assert metrics["status"] == "completed" and metrics["steps"] == 40
    assert metrics["task_info"]["impl"] == "torch"
    assert math.isfinite(metrics["final_psnr"]) and metrics["best_psnr"] > 5
    assert metrics["performance"]["cuda_graphs"], metrics["performance"]


@pytest.mark.parametrize("method", ["tv", "self_guided", "aseqdip", "dop", "drp", "deep_decoder", "oes", "deepred"])
def test_methods_run_on_the_gpu_fast_path(make_cfg, method):
    overrides = GPU + [f"method={method}", "task.size=64"]
    if method == "oes":
        overrides += ["method.mask_steps=10"]
    # deep_decoder brings its own network, which the small skip-net settings of the CPU tests do not fit.
    fast = method != "deep_decoder"
    metrics = train(make_cfg(overrides + ([] if fast else ["logger=none", "callbacks=none"]), fast=fast))
    assert metrics["status"] == "completed" and math.isfinite(metrics["final_psnr"])
    assert metrics["performance"]["cuda_graphs"] == (method not in ("oes", "deepred")), metrics["performance"]


def test_batched_fit_on_the_gpu_matches_single_runs(make_cfg):
    """B members fitted together (vmapped, CUDA graph of the step) reconstruct as the single runs do
    (over a few steps: see test_cuda_graph_step_matches_eager_fp32)."""
    base = [
        "trainer.accelerator=gpu",
        "trainer.max_steps=10",
        "task.size=64",
        "seed=1",
        "performance.autocast=false",
        "performance.channels_last=false",
        "performance.compile=false",
    ]
    summary = train(make_cfg(base + ["batching.size=2"], subdir="batched"))
    single = train(make_cfg(base + ["seed=2", "performance.cuda_graphs=false"], subdir="single"))
    assert summary["status"] == "completed" and len(summary["members"]) == 2
    assert "cuda" in summary["device"]
    # Grouped (vmapped) and plain convolutions round differently; measured on an H100: 0.11 dB apart at 10 steps.
    assert summary["members"][1]["best_psnr"] == pytest.approx(single["best_psnr"], abs=0.3)


def test_reg_noise_is_fresh_at_every_replay(make_cfg):
    """DIP's input noise is drawn inside the graph: every replay must see new noise, not the recorded draw."""
    base = GPU + ["task.size=64", "performance.autocast=false", "performance.channels_last=false", "module.log_every=1"]
    module, _ = fit(make_cfg(base + ["method.reg_noise_std=0.5", "method.lr=1e-12", "trainer.max_steps=12"]))
    losses = module.history["loss"][4:]  # replays; with a frozen network only the noise changes the loss
    assert len(set(losses)) == len(losses)

"""Any image size: networks pad their grid to their downsampling factor and crop the output back
(networks/base.py), so raw MRI/CT/photo sizes need no cropping of the field of view."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import QUIET_CPU
from untrained.errors import UserError
from untrained.networks.base import crop_to, pad_to
from untrained.networks.deep_decoder import DeepDecoder
from untrained.networks.skip import SkipNet
from untrained.run import build_module
from untrained.train import train

# FAST (conftest) sets skip-net widths; the deep decoder and DRP runs use QUIET_CPU with their own widths.
NETWORKS = {
    "skip": ([], True),
    "deep_decoder": (
        QUIET_CPU + ["method=deep_decoder", "network.channels=16", "network.blocks=3", "method.input.channels=16"],
        False,
    ),
    "drp": (
        QUIET_CPU + ["method=drp", "network.channels_down=[8]", "network.channels_up=[8]", "network.channels_skip=[2]"],
        False,
    ),
}


def run(make_cfg, overrides, fast=True, steps=3, subdir="run"):
    cfg = make_cfg(overrides + [f"trainer.max_steps={steps}"], fast=fast, subdir=subdir)
    metrics = train(cfg)
    return metrics, cfg.paths.output_dir


def check_outputs(metrics, output_dir, image_shape):
    assert metrics["status"] == "completed", metrics.get("failure")
    for name in ("final", "best"):
        assert np.load(f"{output_dir}/{name}.npy").shape == tuple(image_shape)
    assert math.isfinite(metrics["final_psnr"]) and math.isfinite(metrics["best_psnr"])
    assert {"final_ssim", "best_step"} <= set(metrics)
    assert json.load(open(f"{output_dir}/metrics.json"))["final_psnr"] == metrics["final_psnr"]


@pytest.mark.parametrize("size", [(230, 180), (97, 131)])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_2d_network_denoises_any_image_size(make_cfg, network, size):
    overrides, fast = NETWORKS[network]
    metrics, output_dir = run(make_cfg, overrides + [f"task.size=[{size[0]},{size[1]}]"], fast)
    check_outputs(metrics, output_dir, (3, *size))


def test_mri_simulation_at_a_raw_brain_size(make_cfg):
    metrics, output_dir = run(make_cfg, ["task=mri", "task.size=[230,180]", "task.coils=4", "task.cg_iterations=2"])
    check_outputs(metrics, output_dir, (2, 230, 180))


def test_ct_at_an_odd_size(make_cfg):
    metrics, output_dir = run(make_cfg, ["task=ct", "task.size=[97,97]", "task.views=12", "task.tv_max_iterations=2"])
    check_outputs(metrics, output_dir, (1, 97, 97))


@pytest.mark.parametrize("shape", [(1, 2, 37, 45), (2, 3, 32, 40), (1, 1, 5), (1, 1, 3, 2)])
@pytest.mark.parametrize("grow", [1, 3, 8])
def test_pad_and_crop_round_trip_exactly(shape, grow):
    x = torch.randn(shape)
    spatial = shape[2:]
    target = [n + grow + i for i, n in enumerate(spatial)]  # odd and even margins
    padded = pad_to(x, target)
    assert list(padded.shape[2:]) == target
    assert torch.equal(crop_to(padded, spatial), x)
    assert pad_to(x, spatial) is x and crop_to(x, spatial) is x  # valid sizes: no op at all
    # Centred: the odd pixel goes after. Reflection where every side allows it, else the edge is replicated.
    margins = [((t - n) // 2, t - n - (t - n) // 2) for n, t in zip(spatial, target)]
    flat = [p for pair in reversed(margins) for p in pair]
    reflectable = all(max(pair) < n for pair, n in zip(margins, spatial))
    assert torch.equal(padded, torch.nn.functional.pad(x, flat, mode="reflect" if reflectable else "replicate"))


def test_networks_crop_their_output_to_the_image():
    net = SkipNet(4, 3, [8] * 3, [8] * 3, [2] * 3)  # factor 8; reflection: >= 2 pixels at the coarsest scale
    assert net.working_shape((37, 45)) == (40, 48) and net.working_shape((8, 32)) == (16, 32)
    net.fit_to((3, 37, 45))
    z = torch.rand(1, *net.input_shape((3, 37, 45)))
    assert z.shape == (1, 4, 40, 48) and net(z).shape == (1, 3, 37, 45)
    assert torch.equal(net(z), crop_to(net.generate(z), (37, 45)))
    net.fit_to((3, 32, 32))  # already valid: no crop
    assert net.image_grid is None
    decoder = DeepDecoder(8, 1, channels=8, blocks=3)  # z at 1/4 of the working grid
    decoder.fit_to((1, 97, 131))
    z = torch.rand(1, *decoder.input_shape((1, 97, 131)))
    assert z.shape == (1, 8, 25, 33) and decoder(z).shape == (1, 1, 97, 131)
    state = dict(SkipNet(4, 3, [8] * 3, [8] * 3, [2] * 3).state_dict())
    assert state.keys() == net.state_dict().keys()  # the crop is no parameter or buffer


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.size=4"], "task.size: the image \\(4x4\\) is too small for the network"),
        (["task.size=[64,5]"], "task.size: the image \\(64x5\\) is too small"),
        (["task.size=8", "network.pad=zero"], "task.size: the image \\(8x8\\) leaves one pixel"),
    ],
)
def test_too_small_images_are_refused_with_one_line(make_cfg, overrides, message):
    with pytest.raises(UserError, match=message) as error:
        train(make_cfg(overrides))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["aseqdip", "self_guided"])
def test_methods_comparing_z_with_the_output_do_so_on_the_image_grid(make_cfg, method):
    """z is the measurement reflection-padded to the working grid; the autoencoding / self-guidance term
    compares the output with z's centre, which is exactly the image-sized measurement at the start."""
    options = ["method.loss=mse"] if method == "aseqdip" else ["method.norm=l2"]
    module = build_module(
        make_cfg([f"method={method}", "method.input.kind=measurement", "task.size=[37,45]", *options])
    )
    method_, network, problem = module.method, module.network, module.problem
    assert method_.z.shape == (1, 3, 40, 48)  # the FAST skip net's factor 8
    assert torch.equal(crop_to(method_.z, (37, 45)), problem.init)
    assert torch.equal(method_.z, pad_to(problem.init, (40, 48)))
    term = "autoencoding" if method == "aseqdip" else "self_guidance"
    optimizer = method_.configure_optimizer(network)
    for step in range(2):
        z = method_.z.detach().clone()
        out = method_.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
        assert out.output.shape == (1, 3, 37, 45)
        expected = (out.output.detach() - crop_to(z, (37, 45))).pow(2).mean()
        assert torch.allclose(out.logs[term], expected)
        method_.after_step(network, problem, step, out)
    if method == "aseqdip":  # the block's (2 steps) last output became the next input, padded as the first
        assert torch.equal(method_.z, pad_to(out.output.detach(), (40, 48)))


def test_batched_loop_fit_at_an_odd_size_is_the_separate_runs(make_cfg):
    _, separate = run(make_cfg, ["task.size=[37,45]"], steps=3, subdir="separate")
    batched, batch_dir = run(
        make_cfg,
        ["task.size=[37,45]", "batching.size=2", "batching.mode=loop"],
        steps=3,
        subdir="batched",
    )
    assert batched["status"] == "completed"
    assert np.array_equal(np.load(f"{separate}/final.npy"), np.load(f"{batch_dir}/member_0/final.npy"))
    assert np.load(f"{batch_dir}/member_1/final.npy").shape == (3, 37, 45)


def test_fast_path_at_an_odd_size(make_cfg):
    metrics, output_dir = run(
        make_cfg, ["task.size=[37,45]", "performance.autocast=true", "performance.channels_last=true"]
    )
    check_outputs(metrics, output_dir, (3, 37, 45))
    assert metrics["performance"]["channels_last"] and metrics["performance"]["autocast"]


def test_file_sizes_are_kept_with_size_null(make_cfg, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((37, 45, 3)) * 255).astype(np.uint8)).save(photo)
    for task in ("denoising", "inpainting", "deblurring"):
        metrics, output_dir = run(make_cfg, [f"task={task}", f"task.image={photo}", "task.size=null"], subdir=task)
        check_outputs(metrics, output_dir, (3, 37, 45))
    # Super-resolution keeps the largest multiple of the factor (the SR literature's modcrop).
    metrics, output_dir = run(make_cfg, ["task=super_resolution", f"task.image={photo}", "task.size=null"], subdir="sr")
    check_outputs(metrics, output_dir, (3, 36, 44))
    slice_file = tmp_path / "slice.npy"
    np.save(slice_file, np.random.default_rng(1).random((37, 37)).astype(np.float32))
    metrics, output_dir = run(
        make_cfg,
        ["task=ct", f"task.image={slice_file}", "task.size=null", "task.views=8", "task.tv_max_iterations=2"],
        subdir="ct",
    )
    check_outputs(metrics, output_dir, (1, 37, 37))


def test_raw_mri_file_at_its_odd_size(make_cfg, tmp_path):
    import h5py

    from untrained.operators.mri import fft2c
    from untrained.tasks.mri import simulate_coil_images

    x, maps = simulate_coil_images("shepp_logan_phantom", [45, 37], 4, phase=0.5)
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=fft2c(maps * x).numpy()[None].astype(np.complex64))
    metrics, output_dir = run(
        make_cfg,
        ["task=mri", f"task.file={path}", "task.size=null", "task.cg_iterations=2", "task.center_fraction=0.25"],
    )
    check_outputs(metrics, output_dir, (2, 45, 37))


def test_size_errors_of_tasks_with_fixed_grids(make_cfg, tmp_path):
    with pytest.raises(UserError, match="task.size as a multiple of 4"):
        train(make_cfg(["task=super_resolution", "task.size=[97,131]"]))
    with pytest.raises(UserError, match="square"):
        train(make_cfg(["task=ct", "task.size=[97,131]"]))
    np.save(tmp_path / "wide.npy", np.zeros((37, 45), dtype=np.float32))
    with pytest.raises(UserError, match="CT reconstructs square images"):
        train(make_cfg(["task=ct", f"task.image={tmp_path / 'wide.npy'}", "task.size=null"]))


def test_edip_pretraining_pads_its_synthetic_inputs(make_cfg):
    """EDIP's stage 1 feeds the network its own inputs (A^H of random-ellipse phantoms): padded as z is."""
    metrics, output_dir = run(
        make_cfg,
        [
            "task=mri",
            "task.size=[37,45]",
            "task.coils=4",
            "task.cg_iterations=2",
            "method=edip_pretrain",
            "method.batch_size=2",
        ],
    )
    check_outputs(metrics, output_dir, (2, 37, 45))

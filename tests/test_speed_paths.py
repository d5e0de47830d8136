"""The fast path (compile, bf16, channels-last), batched fits and the benchmark, on tiny CPU problems.

No timing assertions: speed is measured by ``python -m benchmarks``; these tests check that every
path computes the same reconstruction as the plain one.
"""

import json
import logging
import math
import resource
import sys

import lightning as L
import numpy as np
import pytest
import torch

from benchmarks.host_reads import HostSyncCounter
from untrained.errors import UserError
from untrained.networks.deep_decoder import DeepDecoder
from untrained.networks.skip import SkipNet
from untrained.run import assemble, build_module, member_config
from untrained.speed import policy
from untrained.speed.compile import CompiledWithFallback
from untrained.speed.memory import reuse_freed_memory
from untrained.speed.policy import Performance
from untrained.speed.runner import FastForward
from untrained.train import train

STEPS = ["trainer.max_steps=8", "seed=5"]


def fit(cfg, extra_callbacks=()):
    """What ``train(cfg)`` fits (``run.assemble``: module, callbacks, fast path), without logger or outputs."""
    run = assemble(cfg, extra_callbacks, logger=False)
    run.trainer.fit(run.module)
    run.signals.restore_handlers()
    return run.module, run


@pytest.fixture(scope="module")
def eager_run():
    """The fp32 eager reference run that the fast paths are compared with."""
    from tests.conftest import compose_config

    return fit(compose_config(STEPS))[0]


def test_auto_settings_on_cpu_and_requests_are_explained(caplog, monkeypatch):
    """On a CPU, auto turns channels-last on for 2D image networks with the standard step, and bf16 with it
    where the CPU has bf16 matrix units (AMX) and the network kept its PSNR in bf16; never compilation or
    graphs; requests that cannot be honoured say why."""
    cpu, image_network, signal_network = (
        torch.device("cpu"),
        SkipNet(1, 1, 8, 8, 2, num_scales=2),
        SkipNet(1, 1, 8, 8, 2, num_scales=2, dim=1),
    )
    on = Performance().resolve(cpu, image_network)
    assert on == {
        "autocast": policy.cpu_has_bf16_matrix_units(),
        "channels_last": True,
        "compile": False,
        "cuda_graphs": False,
    }
    for has_amx in (True, False):
        monkeypatch.setattr(policy, "cpu_has_bf16_matrix_units", lambda has_amx=has_amx: has_amx)
        assert Performance().resolve(cpu, image_network) == {**on, "autocast": has_amx}
        assert Performance().resolve(cpu, image_network, operator_capturable=False)["channels_last"]  # CT
        assert not any(Performance().resolve(cpu, signal_network).values())  # 1D
        assert not any(Performance().resolve(cpu, image_network, method_capturable=False).values())  # e.g. OES
        decoder = Performance().resolve(cpu, DeepDecoder(4, 1, channels=4, blocks=2))
        assert decoder["channels_last"] and not decoder["autocast"]  # lost 0.4 dB in bf16
        assert not any(Performance(autocast=False, channels_last=False).resolve(cpu, image_network).values())
    with caplog.at_level(logging.WARNING, logger="untrained"):
        settings = Performance(cuda_graphs=True).resolve(cpu, image_network)
    assert not settings["cuda_graphs"] and "need a CUDA device" in caplog.text
    with pytest.raises(UserError, match="performance.compile"):
        Performance(compile="yes")
    with pytest.raises(UserError, match="performance.reuse_freed_memory must be true or false"):
        Performance(reuse_freed_memory="yes")


def test_auto_pairs_the_fast_path_with_the_cuda_graph_of_capturable_steps():
    """On a GPU (resolved without one: only the rule is tested), auto turns bf16/channels-last/compile on
    with the CUDA graph, and all of them off for steps that cannot be recorded (OES, CT's external ASTRA kernels)."""
    network, cuda = SkipNet(1, 1, 8, 8, 2, num_scales=2), torch.device("cuda")
    on = Performance().resolve(cuda, network)
    assert on["cuda_graphs"] and on["compile"] and on["channels_last"]
    assert not any(Performance().resolve(cuda, network, method_capturable=False).values())
    assert not any(Performance().resolve(cuda, network, operator_capturable=False).values())
    decoder = Performance().resolve(cuda, DeepDecoder(4, 1, channels=4, blocks=2))  # not autocast_safe
    assert decoder["cuda_graphs"] and not decoder["autocast"]


@pytest.mark.slow  # minutes of inductor compilation
def test_a_compile_failure_in_the_backward_pass_falls_back_to_eager(make_cfg, caplog):
    """Super-resolution's data loss trips an inductor stride assertion in its backward pass (torch 2.13,
    CPU); the probe at setup catches it, where a training step could not."""
    with caplog.at_level(logging.WARNING, logger="untrained"):
        metrics = train(make_cfg(["task=super_resolution", "trainer.max_steps=3", "performance.compile=true"]))
    assert metrics["status"] == "completed" and math.isfinite(metrics["final_psnr"])
    if "torch.compile of the data loss failed" in caplog.text:
        assert metrics["performance"]["compile"] is False  # reported as it ran


def test_compiled_path_matches_eager_psnr(make_cfg):
    """torch.compile (dynamo + AOTAutograd; the aot_eager backend needs no C compiler) on the same seed."""
    two_scales = STEPS + ["network.channels_down=[8,8]", "network.channels_up=[8,8]", "network.channels_skip=[2,2]"]
    eager, _ = fit(make_cfg(two_scales))
    compiled, run = fit(make_cfg(two_scales + ["performance.compile=true", "performance.compile_backend=aot_eager"]))
    assert compiled.performance_report()["compile"] and not compiled.problem.execution.failed  # compiled, no fallback
    assert compiled.status == "completed"
    assert abs(float(compiled.best_psnr) - float(eager.best_psnr)) < 0.1


def test_compile_failure_falls_back_to_eager_with_a_message(caplog):
    def failing_backend(graph, example_inputs):
        raise RuntimeError("this backend cannot compile anything")

    def loss(x):
        return (x**2).mean()

    fn = CompiledWithFallback(loss, "test loss", backend=failing_backend)
    x = torch.randn(8)
    with caplog.at_level(logging.WARNING, logger="untrained"):
        value = fn(x)
    assert fn.failed and torch.equal(value, loss(x))
    assert "torch.compile of the test loss failed" in caplog.text and "performance.compile=false" in caplog.text


def test_bf16_channels_last_path_runs_and_keeps_fp32_outputs(make_cfg, eager_run):
    cfg = make_cfg(STEPS)
    module = build_module(cfg)
    z = module.method.z
    reference = module.network(z)
    module.network.execution = FastForward(
        module.network,
        torch.device("cpu"),
        {"autocast": True, "channels_last": True, "compile": False, "cuda_graphs": False},
    )
    fast = module.network(z)
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    assert 0 < (fast - reference).abs().max() < 0.05  # bf16 rounding, nothing more
    bf16, _ = fit(make_cfg(STEPS + ["performance.autocast=true", "performance.channels_last=true"]))
    assert bf16.performance_report() == {
        "autocast": True,
        "channels_last": True,
        "compile": False,
        "cuda_graphs": False,
    }
    assert bf16.status == "completed"
    assert abs(float(bf16.best_psnr) - float(eager_run.best_psnr)) < 0.3


def test_batched_fit_equals_separate_runs(make_cfg, tmp_path):
    cfg = make_cfg(
        [
            "trainer.max_steps=6",
            "seed=3",
            "module.log_every=4",
            "batching.size=2",
            "batching.mode=vmap",
        ],
        subdir="batched",
    )
    batched = train(cfg)
    assert batched["status"] == "completed" and batched["batch_size"] == 2 and len(batched["members"]) == 2
    for b in range(2):
        single, _ = fit(member_config(cfg, b))  # what a separate run with seed 3 + b fits
        member, reference = batched["members"][b], single.summary()
        assert member["seed"] == 3 + b and member["steps"] == 6
        # Adam turns rounding-level gradient differences (vmapped vs plain convolutions) into tiny weight
        # differences, so trajectories agree to a tolerance, not bit for bit.
        assert abs(member["best_psnr"] - reference["best_psnr"]) < 0.1
        assert member["final_loss"] == pytest.approx(reference["final_loss"], rel=0.05)
        history = json.loads((tmp_path / "batched" / f"member_{b}" / "history.json").read_text())
        assert history["loss"][0] == pytest.approx(single.history["loss"][0], rel=1e-5)  # same init, z and data
        assert history["loss"] == pytest.approx(single.history["loss"], rel=0.05)
        assert (tmp_path / "batched" / f"member_{b}" / "best.png").is_file()
    assert batched["members"][0]["final_psnr"] != batched["members"][1]["final_psnr"]  # different noise and init
    saved = json.loads((tmp_path / "batched" / "metrics.json").read_text())
    assert saved["batch_size"] == 2 and saved["reconstructions_per_hour"] > 0
    assert saved["performance"] == {
        "autocast": False,
        "channels_last": False,
        "compile": False,
        "cuda_graphs": False,
        "batch_mode": "vmap",
    }


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16_channels_last"])
def test_batched_loop_mode_is_bit_for_bit_the_separate_runs(make_cfg, tmp_path, bf16):
    """batching.mode=loop: each member through the plain operations of its separate run, on views
    of the stacked weights, and Adam element by element on the stack: the very same numbers, with the
    separate runs' bf16 autocast and channels-last too (auto on AMX CPUs)."""
    switches = [f"performance.autocast={str(bf16).lower()}", f"performance.channels_last={str(bf16).lower()}"]
    cfg = make_cfg(
        [
            "trainer.max_steps=6",
            "seed=3",
            "module.log_every=4",
            "batching.size=2",
            "batching.mode=loop",
            "method.exp_weight=0.9",
            *switches,
        ],
        subdir="loop",
    )
    batched = train(cfg)
    for b in range(2):
        single, _ = fit(member_config(cfg, b))
        history = json.loads((tmp_path / "loop" / f"member_{b}" / "history.json").read_text())
        assert history["loss"] == single.history["loss"] and history["psnr"] == single.history["psnr"]
        assert batched["members"][b]["best_psnr"] == single.summary()["best_psnr"]
    assert batched["performance"] == {
        "autocast": bf16,
        "channels_last": bf16,
        "compile": False,
        "cuda_graphs": False,
        "batch_mode": "loop",
    }
    with pytest.raises(UserError, match="batching.mode"):
        train(make_cfg(["batching.size=2", "batching.mode=grouped"], subdir="bad"))


def test_batched_vmap_mode_runs_bf16_with_performance_autocast(make_cfg):
    """Autocast has no effect inside vmap, so performance.autocast=true in vmap mode casts each member's network
    weights and input to bf16 (Bf16Forward): the convolutions run in bf16, the optimizer keeps fp32 weights, the
    outputs come back fp32 and differ from fp32 ones by bf16 rounding only."""
    from untrained.fit.batched import Bf16Forward

    base = ["trainer.max_steps=8", "seed=3", "module.log_every=4", "batching.size=2", "batching.mode=vmap"]
    cfg = make_cfg(base + ["performance.autocast=true"], subdir="bf16")
    bf16, _ = fit(cfg)
    assert isinstance(bf16.template.network.execution, Bf16Forward)
    assert bf16.performance_report()["autocast"] is True and bf16.performance_report()["batch_mode"] == "vmap"
    assert all(p.dtype == torch.float32 for p in bf16.stacked.values())
    convolution_outputs = []
    conv = next(m for m in bf16.template.network.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda module, args, out: convolution_outputs.append(out.dtype))
    losses, outputs, _ = bf16.members_call(0)
    handle.remove()
    assert convolution_outputs == [torch.bfloat16] and outputs.dtype == losses.dtype == torch.float32
    # The same weights in fp32: bf16 rounding, nothing more.
    bf16.bf16_weights, bf16.template.network.execution = set(), None
    reference_losses, reference_outputs, _ = bf16.members_call(0)
    assert torch.allclose(losses, reference_losses, rtol=0.02)
    assert 0 < (outputs - reference_outputs).abs().max() < 0.05
    assert torch.isfinite(bf16.tracker.best_psnr).all()


def test_batched_fit_of_chosen_task_indices(make_cfg, tmp_path):
    """batching.indices=[2,0] on an image folder, the seed kept (batching.vary=[]): member b is the
    separate run of task.index = indices[b], to the bit (loop mode, the CPU default)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    base = ["trainer.max_steps=4", f"task.image={folder}", "batching.vary=[]"]
    batched = train(make_cfg(base + ["batching.indices=[2,0]"], subdir="batched"))
    assert batched["batch_size"] == 2
    for member, index in zip(batched["members"], (2, 0)):
        assert member["task_index"] == index and member["task_info"]["image"].endswith("images")
        single = train(make_cfg(base + [f"task.index={index}"], subdir=f"single_{index}"))
        assert member["best_psnr"] == single["best_psnr"] and member["final_loss"] == single["final_loss"]
    with pytest.raises(UserError, match="batching.indices"):
        train(make_cfg(base + ["batching.indices=[1,2]", "batching.size=3"], subdir="bad"))
    with pytest.raises(UserError, match="whole numbers"):
        train(make_cfg(base + ["batching.indices=[1,b]"], subdir="bad_entry"))


def test_batched_early_stopping_runs_per_member(make_cfg):
    cfg = make_cfg(
        [
            "trainer.max_steps=25",
            "batching.size=2",
            "callbacks=es_wmv",
            "trainer.enable_progress_bar=true",
            "callbacks.early_stopping.window=2",
            "callbacks.early_stopping.patience=2",
            "callbacks.early_stopping.check_every=1",
            "callbacks.images.every_n_steps=0",
        ]
    )
    module, run = fit(cfg)
    steps = module.trainer.global_step
    for member, (stopping,) in zip(module.members, run.reporting):
        report = stopping.report(member)
        assert report["es_stopped"] and 0 <= report["es_step"] < report["es_stop_step"] <= steps - 1
        assert report["es_stop_step"] - report["es_step"] == 2  # the member's own patience ran out
    assert steps < 25  # the fit stopped once every member had stopped


def test_host_reads_happen_only_at_log_flushes(make_cfg):
    """On a GPU every tensor → host read is a synchronisation: the step must not make any between flushes."""
    log_every = 5

    class ReadsPerStep(L.Callback):
        def __init__(self, counter):
            self.counter, self.at_start, self.reads = counter, 0, []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.at_start = self.counter.count

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.reads.append(self.counter.count - self.at_start)

    cfg = make_cfg(
        [
            "trainer.max_steps=10",
            f"module.log_every={log_every}",
            "callbacks=default",
            "trainer.enable_progress_bar=true",
            "module.steps_per_batch=1",
        ]
    )
    with HostSyncCounter() as counter:
        recorder = ReadsPerStep(counter)
        fit(cfg, [recorder])
    flushes = {step for step in range(10) if (step + 1) % log_every == 0}
    assert all(count == 0 for step, count in enumerate(recorder.reads) if step not in flushes), recorder.reads
    assert all(recorder.reads[step] > 0 for step in flushes)


def test_benchmark_quick_mode(tmp_path):
    from benchmarks.run import main

    report = main(
        ["--quick", "--tasks", "denoising", "--networks", "skip", "--batch-sizes", "1,2", "--out", str(tmp_path)]
    )
    combo = report["results"][0]
    variants = {v["variant"]: v for v in combo["variants"]}
    assert set(variants) == {"plain", "untrained"}
    assert variants["plain"]["ratio_to_plain"] == 1.0 and variants["untrained"]["seconds_per_step"] > 0
    assert variants["untrained"]["full_reconstruction_s"] == pytest.approx(
        variants["untrained"]["seconds_per_step"] * 3000
    )
    assert [(row["mode"], row["batch_size"]) for row in report["batched"][0]["rows"]] == [
        ("eager", 1),
        ("eager", 2),
        ("loop", 1),
        ("loop", 2),
        ("default", 1),
        ("default", 2),
    ]
    saved = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert saved["machine"]["torch"] == torch.__version__
    assert "| denoising | skip | cpu | untrained |" in (tmp_path / "cpu-quick.md").read_text()


def test_steps_bypass_lightning_wrappers_only_where_they_would_do_nothing(make_cfg):
    """Without callbacks on Lightning's backward/optimizer hooks the step calls torch directly; a callback
    that uses one gets Lightning's wrappers (and its hook every step). Both fit the same numbers."""
    from untrained.fit.loop import DirectOptimizer, step_tools

    class Lanes(L.Callback):
        def __init__(self):
            self.lanes, self.calls = [], 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.lanes.append(type(step_tools(module)[0]))

    class Hooked(Lanes):
        def on_after_backward(self, trainer, module):
            self.calls += 1

    cfg = make_cfg(STEPS + ["module.log_every=4"])
    direct, wrapped = Lanes(), Hooked()
    plain_module, _ = fit(cfg, [direct])
    hooked_module, _ = fit(cfg, [wrapped])
    assert set(direct.lanes) == {DirectOptimizer} and DirectOptimizer not in set(wrapped.lanes)
    assert wrapped.calls == 8 and hooked_module.trainer.global_step == plain_module.trainer.global_step == 8
    assert hooked_module.history["loss"] == plain_module.history["loss"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_steps_freed_activation_maps_are_reused_without_page_faults():
    """A step allocates its activation maps and frees them all. With glibc's default thresholds the freed heap
    top is trimmed and every step faults its maps in again (measured: ~16,000 faults per step of 8 maps of
    8 MiB); after reuse_freed_memory (train() calls it) the steady state faults in no pages."""
    assert reuse_freed_memory()
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        maps = [torch.ones(2 * 2**20) for _ in range(8)]  # written through: 8 maps of 8 MiB
        del maps
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert max(faults[-3:]) < 100, faults  # the first steps settle the heap


@pytest.mark.slow  # a fresh process per setting, each fitting a 256² skip net
def test_malloc_benchmark_runs_each_setting_in_a_fresh_process(tmp_path):
    from benchmarks.malloc import main

    small = ["task.size=32", "network.channels_down=[8,8]", "network.channels_up=[8,8]", "network.channels_skip=[2,2]"]
    report = main(["--steps", "1", "--warmup", "1", "--out", str(tmp_path), *small])
    assert [(r["switches"], r["reuse_freed_memory"]) for r in report["rows"]] == [
        ("fp32", False),
        ("fp32", True),
        ("default", False),
        ("default", True),
    ]
    assert all(r["seconds_per_step"] > 0 for r in report["rows"])
    assert "| fp32 | yes |" in (tmp_path / "cpu-malloc.md").read_text()


def test_fast_path_quality_records_what_each_variant_ran(tmp_path):
    from benchmarks.fast_path_quality import main

    report = main(
        [
            "--size",
            "32",
            "--steps",
            "3",
            "--small-network",
            "--variants",
            "eager",
            "channels_last",
            "--out",
            str(tmp_path),
        ]
    )
    assert [r["performance"]["channels_last"] for r in report["rows"]] == [False, True]
    assert report["rows"][0]["best_psnr_minus_first"] == 0 and all(r["best_psnr"] > 0 for r in report["rows"])
    assert "| channels-last (fp32) |" in (tmp_path / "fast_path_quality.md").read_text()

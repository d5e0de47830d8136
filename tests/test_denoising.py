"""End-to-end runs of train(cfg) on CPU: PSNR rises, outputs are written, seeds repeat."""

import json

import numpy as np
import pytest

from untrained.callbacks.base import StepCallback
from untrained.train import train


def test_short_dip_run_beats_noisy_input_and_writes_outputs(make_cfg, tmp_path):
    cfg = make_cfg(["trainer.max_steps=60", "module.log_every=10"])
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["steps"] == 60
    assert metrics["best_psnr"] > metrics["baseline_noisy_psnr"] + 1.0
    run = tmp_path / "run"
    for name in [
        "final.npy",
        "final.png",
        "best.npy",
        "best.png",
        "measurement.png",
        "ground_truth.png",
        "psnr_curve.png",
        "metrics.json",
        "history.json",
        "baseline_tv.png",
    ]:
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best_psnr"] == metrics["best_psnr"] and 0 <= saved["best_step"] < 60
    assert np.load(run / "best.npy").shape == (3, 32, 32)
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 60  # the data-fit loss of every step


def test_same_seed_same_metrics(make_cfg):
    runs = [train(make_cfg(["trainer.max_steps=15", "seed=7"], subdir=f"r{i}")) for i in range(2)]
    for metrics in runs:
        metrics.pop("wall_time_s"), metrics.pop("seconds_per_step")
    assert runs[0] == runs[1]
    other = train(make_cfg(["trainer.max_steps=15", "seed=8"], subdir="r3"))
    assert other["final_psnr"] != runs[0]["final_psnr"]


def test_paper_tricks_average_and_perturb(make_cfg):
    """reg_noise_std and exp_weight are live options: the averaged estimate differs from the plain one."""
    plain = train(make_cfg(["trainer.max_steps=10"], subdir="a"))
    tricks = train(
        make_cfg(["trainer.max_steps=10", "method.reg_noise_std=0.0333", "method.exp_weight=0.99"], subdir="b")
    )
    assert plain["final_psnr"] != tricks["final_psnr"]


def test_grey_image_file_input(make_cfg, tmp_path):
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(path)
    metrics = train(make_cfg([f"task.image={path}", "task.sigma=50", "trainer.max_steps=3"]))
    assert metrics["steps"] == 3
    assert np.load(tmp_path / "run" / "final.npy").shape == (1, 32, 32)


def test_stop_between_log_flushes_keeps_every_step(make_cfg):
    """A callback stopping the run between two flushes: the pending steps still reach the history."""
    from untrained.fit.module import UntrainedModule
    from untrained.run import build, build_module

    class StopAtFive(StepCallback):
        def on_step_end(self, trainer, module, step):
            trainer.should_stop = step + 1 >= 5

    cfg = make_cfg(["trainer.max_steps=40", "module.log_every=25"])
    module: UntrainedModule = build_module(cfg)
    trainer = build(cfg.trainer, "trainer", callbacks=[StopAtFive()], logger=False)
    trainer.fit(module)
    assert module.status == "completed" and module.history["step"] == list(range(5))


def test_a_crash_mid_run_still_writes_the_results_so_far(make_cfg, tmp_path):
    """An exception during training: metrics.json says failed, the best iterate is saved, the error propagates."""
    cfg = make_cfg(
        [
            "trainer.max_steps=30",
            "module.log_every=5",
            "+callbacks.crash._target_=tests.test_denoising.CrashAtStep",
            "+callbacks.crash.step=12",
        ]
    )
    with pytest.raises(RuntimeError, match="boom at step 12"):
        train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and "boom at step 12" in saved["failure"]
    assert (tmp_path / "run" / "best.npy").is_file() and saved["best_step"] <= 12


class CrashAtStep(StepCallback):
    """Raises once a given number of steps are done: a stand-in for any bug or hardware error mid-run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, module, step: int):
        if step + 1 == self.step:
            raise RuntimeError(f"boom at step {self.step}")


@pytest.mark.parametrize("grayscale, name", [(True, "bm3d"), (False, "cbm3d")])
def test_bm3d_baseline_beats_the_noisy_input(grayscale, name):
    pytest.importorskip("bm3d")
    from untrained.tasks.denoising import denoising

    problem = denoising(size=48, grayscale=grayscale)
    psnr = {key: float(problem.psnr(image)) for key, image in problem.baselines().items()}
    assert set(psnr) == {"noisy", "tv", name}
    assert psnr[name] > psnr["noisy"] + 4

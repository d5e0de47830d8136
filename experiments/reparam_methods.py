"""Measured figures for the re-parameterization methods: deep decoder, DRP, OES, DeepRED, DOP.

Gaussian denoising (sigma = 25/255) of the astronaut image at ``--size`` for the deep decoder (the paper's
k = 128, d = 6, Adam 0.01, 1900 steps of the denoising notebook), DRP (reference settings), OES and
DeepRED, with vanilla DIP on the same (reduced-width) skip net as the yardstick; then salt-and-pepper
denoising (``--amount`` of the pixels) with vanilla DIP against DOP, reporting how much of the injected
corruption g⊙g − h⊙h recovers. Step counts are cut to CPU budgets (``--scale`` multiplies them all).

    python -m experiments.reparam_methods --size 64 --runs outputs/experiments/reparam

Prints one row per run (best PSNR and its step, final PSNR, the input's PSNR, seconds per step) and
writes them to ``<runs>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from skimage.util import random_noise

ROOT = Path(__file__).resolve().parents[1]
SKIP = ["network.channels_down=[32,32,32,32]", "network.channels_up=[32,32,32,32]", "network.channels_skip=[4,4,4,4]"]

# name: (overrides, steps at --scale 1)
GAUSSIAN_RUNS = {
    "vanilla": (["method=vanilla", *SKIP], 1500),
    "deep_decoder": (["method=deep_decoder"], 1900),
    "drp": (["method=drp"], 1000),
    "oes": (["method=oes", "method.mask_steps=500", *SKIP], 1500),
    "oes_prune_all": (["method=oes", "method.mask_steps=500", "method.prune=all", *SKIP], 1500),
    "deepred": (["method=deepred", *SKIP], 1500),
}
# DOP's corruption learning rate scales with the number of measurements (the loss is a mean): the
# reference's 500 at 3·512² entries; 100 at 3·64² with g, h started at 1e-3 to fit a CPU budget.
SALT_AND_PEPPER_RUNS = {
    "vanilla_sp": (["method=vanilla", *SKIP], 2000),
    "dop": (["method=dop", *SKIP, "method.corruption_lr=100", "method.corruption_init=1e-3"], 2000),
}


def compose(overrides: list[str], args, name: str, steps: int):
    from untrained.run import compose as compose_overrides

    return compose_overrides(
        overrides
        + [
            f"task.size={args.size}",
            f"trainer.max_steps={steps}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "logger=none",
            "callbacks=none",
            f"seed={args.seed}",
            f"paths.output_dir={Path(args.runs).resolve() / name}",
            "module.log_every=100",
        ],
    )


def salt_and_pepper(problem, amount: float, seed: int):
    """The task's clean image with ``amount`` of its pixels set to 0 or 1 (skimage's s&p), as a new problem."""
    from untrained.problem import InverseProblem

    clean = problem.x_true
    corrupted = random_noise(clean[0].numpy(), mode="s&p", amount=amount, rng=seed).astype(np.float32)
    return InverseProblem(
        "salt_and_pepper",
        problem.operator,
        torch.from_numpy(corrupted)[None],
        problem.image_shape,
        x_true=clean,
        init=torch.from_numpy(corrupted)[None],
        baselines={"corrupted": torch.from_numpy(corrupted)[None]},
        info={"amount": amount},
    )


def fit_salt_and_pepper(cfg, amount: float) -> tuple[dict, object]:
    """train() on a salt-and-pepper version of the configured task (the denoising task has Gaussian noise only)."""
    from untrained.outputs import write_results
    from untrained.run import assemble, build, fit

    L.seed_everything(cfg.seed, verbose=False)
    problem = salt_and_pepper(build(cfg.task, "task"), amount, cfg.seed)
    run = assemble(cfg, problem=problem)
    metrics = write_results(run, fit(run))
    return metrics, run.module


def row(metrics: dict, baseline: str) -> dict:
    return {k: metrics.get(k) for k in ("best_psnr", "best_step", "final_psnr", "seconds_per_step")} | {
        "input_psnr": metrics.get(f"baseline_{baseline}_psnr")
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every run's step count")
    parser.add_argument("--amount", type=float, default=0.3, help="salt-and-pepper fraction of pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="run only these names")
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "experiments" / "reparam"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from untrained.train import train

    summary_path = Path(args.runs) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name, (overrides, steps) in GAUSSIAN_RUNS.items():
        if args.only and name not in args.only:
            continue
        summary[name] = row(train(compose(overrides, args, name, int(steps * args.scale))), "noisy")
        print(name, summary[name], flush=True)
    for name, (overrides, steps) in SALT_AND_PEPPER_RUNS.items():
        if args.only and name not in args.only:
            continue
        metrics, module = fit_salt_and_pepper(compose(overrides, args, name, int(steps * args.scale)), args.amount)
        summary[name] = row(metrics, "corrupted")
        if name == "dop":
            injected = module.problem.y - module.problem.x_true
            recovered = module.method.corruption().detach()
            summary[name]["corruption_captured"] = 1 - float(((recovered - injected) ** 2).sum() / (injected**2).sum())
        print(name, summary[name], flush=True)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

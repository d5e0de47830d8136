"""Closing figures for `task=ct` on the embedded Shepp-Logan phantom: FBP/TV baselines, DIP and Educated DIP
best/final PSNR, and operator time.

    python -m experiments.ct_embedded                              # 128 px, 18 views, a CPU run (minutes)
    python -m experiments.ct_embedded --size 256 --steps 3000      # the task's default size (GPU)
    python -m experiments.ct_embedded --override task.photons=1e4  # with Poisson noise

Runs `train()` for method=vanilla, then method=edip_pretrain (random ellipses, ``--pretrain-steps``) and
method=edip from its checkpoint, on the same measurement, and times the operator at the default size
(256×256, 18 views) with benchmarks/operators_ct.py. Prints one JSON object; run outputs go to
outputs/experiments/ct_embedded/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.operators_ct import benchmark
from untrained.methods.edip import CHECKPOINT_NAME
from untrained.run import compose
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]

KEYS = (
    "baseline_fbp_psnr",
    "baseline_tv_psnr",
    "best_psnr",
    "best_step",
    "final_psnr",
    "steps",
    "seconds_per_step",
    "wall_time_s",
)


def run(overrides: list[str]) -> dict:
    metrics = train(compose(overrides))
    return {key: metrics.get(key) for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides (task, network)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = ROOT / "outputs" / "experiments" / "ct_embedded" / f"size{args.size}_steps{args.steps}_seed{args.seed}"
    common = [
        "task=ct",
        f"task.size={args.size}",
        f"seed={args.seed}",
        "logger=none",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        *args.override,
    ]
    result = {"overrides": common, "steps": args.steps, "pretrain_steps": args.pretrain_steps}
    result["vanilla"] = run(
        common + ["method=vanilla", f"trainer.max_steps={args.steps}", f"paths.output_dir={base / 'vanilla'}"]
    )
    result["edip_pretrain"] = run(
        common
        + [
            "method=edip_pretrain",
            f"trainer.max_steps={args.pretrain_steps}",
            f"paths.output_dir={base / 'edip_pretrain'}",
        ]
    )
    result["edip"] = run(
        common
        + [
            "method=edip",
            f"method.checkpoint={base / 'edip_pretrain' / CHECKPOINT_NAME}",
            f"trainer.max_steps={args.steps}",
            f"paths.output_dir={base / 'edip'}",
        ]
    )
    result["operator_timing_default_size"] = benchmark(256, 18, "astra_cpu")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

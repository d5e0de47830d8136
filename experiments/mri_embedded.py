"""Closing figures for `task=mri` on the embedded simulation: baselines, DIP best/final PSNR, operator time.

    python -m experiments.mri_embedded                          # 128 px, 400 steps (a CPU run, minutes)
    python -m experiments.mri_embedded --size 320 --steps 3000  # the task's default size (GPU)
    python -m experiments.mri_embedded --override task.acceleration=8 task.center_fraction=0.04

Runs `train()` on the composed config (task=mri, network=skip with the MRI adjustment of
conf/network_task/skip_mri.yaml, method=vanilla) and times the operator at the default size
(320×320, 15 coils) with benchmarks/operators_mri.py. Prints one JSON object; the run's outputs go to
outputs/experiments/mri_embedded/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.operators_mri import benchmark
from untrained.run import compose
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]

KEYS = (
    "baseline_zero_filled_psnr",
    "baseline_zero_filled_ssim",
    "baseline_cg_sense_psnr",
    "baseline_cg_sense_ssim",
    "best_psnr",
    "best_ssim",
    "best_step",
    "final_psnr",
    "final_ssim",
    "steps",
    "seconds_per_step",
    "wall_time_s",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    args = parser.parse_args()
    output_dir = (
        ROOT / "outputs" / "experiments" / "mri_embedded" / f"size{args.size}_steps{args.steps}_seed{args.seed}"
    )
    overrides = [
        "task=mri",
        f"task.size={args.size}",
        f"trainer.max_steps={args.steps}",
        f"seed={args.seed}",
        "logger=none",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={output_dir}",
        *args.override,
    ]
    cfg = compose(overrides)
    metrics = train(cfg)
    result = {
        "overrides": overrides,
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        **{key: metrics.get(key) for key in KEYS},
        "operator_timing_default_size": benchmark(320, 320, 15, "cpu"),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

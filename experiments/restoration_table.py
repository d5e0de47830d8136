"""Vanilla DIP on every image restoration task's embedded default, as a Markdown table.

Per task: the image size, the classical baseline's PSNR (and the degraded input's), and DIP's best and
final PSNR. On this shared CPU it runs at a reduced size with the default skip network:

    python -m experiments.restoration_table                      # 64 px, 500 steps, CPU
    python -m experiments.restoration_table --size 256 --steps 3000 --device gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# task → (classical baseline, degraded input) as named in the task's baselines
TASKS = {
    "denoising": ("tv", "noisy"),
    "deblurring": ("tv", "blurred"),
    "semi_blind_deblurring": ("tv", "blurred"),
    "nonlinear_deblurring": ("tv", "blurred"),
    "inpainting": ("biharmonic", "masked"),
    "super_resolution": ("bicubic", "bicubic"),
}


def run(task: str, args) -> dict:
    from untrained.run import compose
    from untrained.train import train

    cfg = compose(
        [
            f"task={task}",
            f"task.size={args.size}",
            f"trainer.max_steps={args.steps}",
            f"seed={args.seed}",
            f"trainer.accelerator={args.device}",
            "logger=none",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={args.runs}/{task}",
            *args.override,
        ],
    )
    return train(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "restoration_table"))
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [
        "| task | size | steps | degraded input PSNR | baseline | baseline PSNR | DIP best PSNR (step) "
        "| DIP final PSNR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        baseline, degraded = TASKS[task]
        m = run(task, args)
        rows.append(
            f"| {task} | {args.size} | {m['steps']} | {m[f'baseline_{degraded}_psnr']:.2f} | {baseline} | "
            f"{m[f'baseline_{baseline}_psnr']:.2f} | {m['best_psnr']:.2f} ({m['best_step']}) "
            f"| {m['final_psnr']:.2f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

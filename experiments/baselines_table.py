"""Per task (its default config at a CPU size, seed 0), every baseline's PSNR from ``problem.baselines()``.

    python -m experiments.baselines_table --out experiments/results/baselines_after.json
    python -m experiments.baselines_table --compare before.json after.json   # → baselines_before_after.{json,md}

Runs against whichever tree ``untrained`` is imported from (its own conf/), so the same script measures a branch's
parent (BEFORE) and the branch (AFTER).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = (
    "denoising",
    "deblurring",
    "nonlinear_deblurring",
    "semi_blind_deblurring",
    "inpainting",
    "super_resolution",
    "ct",
    "mri",
)


def measure(size: int) -> dict:
    import torch

    from untrained.run import build, compose

    torch.set_num_threads(1)
    table = {}
    for name in TASKS:
        began = time.time()
        problem = build(compose([f"task={name}", f"task.size={size}", "seed=0"]).task, "task")
        table[name] = {
            "psnr": {key: round(float(problem.psnr(value)), 2) for key, value in problem.baselines().items()},
            "iterations": problem.info.get("baseline_iterations", {}),
            "seconds": round(time.time() - began, 1),
        }
        print(name, table[name], flush=True)
    return {"size": size, "seed": 0, "tasks": table}


def compare(before_path: Path, after_path: Path) -> None:
    before, after = json.loads(before_path.read_text()), json.loads(after_path.read_text())
    lines = [
        f"# Baseline PSNR (dB) before and after (default task configs at {after['size']} px, seed 0)",
        "",
        "| task | baseline | before | after | iterations (after) |",
        "|---|---|---|---|---|",
    ]
    for task, entry in after["tasks"].items():
        old = before["tasks"].get(task, {}).get("psnr", {})
        for baseline in sorted(set(old) | set(entry["psnr"])):
            value_before = old.get(baseline)
            value_after = entry["psnr"].get(baseline)
            iterations = entry["iterations"].get(baseline, "")
            lines.append(
                f"| {task} | {baseline} | {'—' if value_before is None else f'{value_before:.2f}'} "
                f"| {'—' if value_after is None else f'{value_after:.2f}'} | {iterations} |"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "baselines_before_after.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
    (RESULTS / "baselines_before_after.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    result = measure(args.size)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

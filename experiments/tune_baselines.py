"""Choose each task's classical-baseline parameters by grid search against ground truth on a TUNING image (not a
test image), and report the oracle (the grid's best on the task's default test image).

    python -m experiments.tune_baselines [--size 96] [--tasks mri semi_blind_deblurring]

Writes experiments/results/baseline_tuning.{json,md} (``--tasks`` updates those tasks' entries and keeps the others).
The chosen values go into conf/task/*.yaml by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from untrained.baselines.iterative import cgls, sirt
from untrained.baselines.tv import tv_pdhg
from untrained.tasks.ct import ct
from untrained.tasks.deblurring import deblurring
from untrained.tasks.denoising import denoising
from untrained.tasks.inpainting import inpainting
from untrained.tasks.mri import mri
from untrained.tasks.super_resolution import super_resolution

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHTS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
NO_BASELINES = {"tv_max_iterations": 0}

# task → (factory, options, tuning image options, test image options, bounds)
TASKS = {
    "denoising": (denoising, {}, {"image": "coffee"}, {"image": "astronaut"}, (0.0, 1.0)),
    "deblurring": (deblurring, {}, {"image": "coffee"}, {"image": "chelsea"}, (0.0, 1.0)),
    "inpainting": (inpainting, {}, {"image": "coffee"}, {"image": "chelsea"}, (0.0, 1.0)),
    "super_resolution": (super_resolution, {}, {"image": "coffee"}, {"image": "chelsea"}, (0.0, 1.0)),
    "ct": (
        ct,
        {"sirt_iterations": 0, "cgls_iterations": 0},
        {"image": "ellipses", "phantom_seed": 1},
        {"image": "shepp_logan"},
        (0.0, 1.0),
    ),
    "semi_blind_deblurring": (
        deblurring,
        {  # conf/task/semi_blind_deblurring.yaml: data blurred by the true kernel, the operator's kernel too narrow
            "kernel": {"kind": "gaussian", "size": 9, "sigma": 1.5},
            "true_kernel": {"kind": "gaussian", "size": 9, "sigma": 2.0},
            "noise_level": 0.0196,
        },
        {"image": "coffee"},
        {"image": "chelsea"},
        (0.0, 1.0),
    ),
    # ESPIRiT maps of a simulated full-field photograph are unreliable (experiments/tune_mri_baselines.py), so the
    # tuning image is simulated with its true coil maps (maps=given), as for the L1-wavelet baseline.
    "mri": (mri, {"cg_iterations": 1, "l1_iterations": 1}, {"image": "camera", "maps": "given"}, {}, None),
}


def tv_grid(problem, bounds, max_iterations: int) -> dict[float, float]:
    operator, y = problem.operator, problem.y
    start = problem.to_domain(problem.init)
    norm = 1.0 if problem.name in ("ct", "denoising", "inpainting") else None
    out = {}
    for weight in WEIGHTS:
        result = tv_pdhg(operator, y, weight, start, bounds, max_iterations, 1e-4, operator_norm_value=norm)
        out[weight] = round(float(problem.psnr(problem.from_domain(result.image))), 3)
    return out


def iteration_curve(problem, method: str, iterations: list[int]) -> dict[int, float]:
    out = {}
    for count in iterations:
        estimate = (
            sirt(problem.operator, problem.y, count)
            if method == "sirt"
            else cgls(problem.operator, problem.y, count)[0]
        )
        out[count] = round(float(problem.psnr(estimate)), 3)
    return out


def fbp_grid(problem) -> dict[str, float]:
    out = {}
    for name in ("Ram-Lak", "Shepp-Logan", "Cosine", "Hann"):
        for scaling in (0.3, 0.5, 0.7, 0.85, 1.0):
            out[f"{name}@{scaling}"] = round(float(problem.psnr(problem.operator.fbp(problem.y, name, scaling))), 3)
    return out


def best(grid: dict):
    key = max(grid, key=grid.get)
    return key, grid[key]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--max-iterations", type=int, default=1000)
    parser.add_argument("--tasks", nargs="*", choices=list(TASKS), help="retune these only (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    saved = RESULTS / "baseline_tuning.json"
    results = json.loads(saved.read_text())["tasks"] if args.tasks and saved.exists() else {}
    for name, (factory, options, tuning, test, bounds) in TASKS.items():
        if args.tasks and name not in args.tasks:
            continue
        began = time.time()
        entry = {}
        for role, image in (("tuning", tuning), ("test", test)):
            problem = factory(size=args.size, **options, **image, **NO_BASELINES)
            grids = {"tv_weight": tv_grid(problem, bounds, args.max_iterations)}
            if name == "ct":
                grids["fbp"] = fbp_grid(problem)
                grids["sirt_iterations"] = iteration_curve(problem, "sirt", [10, 20, 50, 100, 200, 400])
                grids["cgls_iterations"] = iteration_curve(problem, "cgls", [3, 5, 10, 15, 20, 30, 50])
            grids = {k: {str(x): v for x, v in grid.items()} for k, grid in grids.items()}  # as JSON keeps them
            entry[role] = {"image": image, "grids": grids, "best": {k: best(v) for k, v in grids.items()}}
        entry["seconds"] = round(time.time() - began, 1)
        results[name] = entry
        print(name, entry["tuning"]["best"], entry["test"]["best"], entry["seconds"], flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"size": args.size, "max_iterations": args.max_iterations, "seed": 0, "weights": WEIGHTS}
    (RESULTS / "baseline_tuning.json").write_text(json.dumps({"settings": meta, "tasks": results}, indent=1))
    lines = [
        f"# Baseline tuning ({args.size} px, seed 0; TV-PDHG ≤ {args.max_iterations} iterations, gap tolerance 1e-4)",
        "",
        "| task | parameter | tuning image | chosen (tuning PSNR) | test PSNR at chosen | oracle on test image |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        for parameter, (chosen, value) in entry["tuning"]["best"].items():
            at_chosen = entry["test"]["grids"][parameter][str(chosen)]
            oracle, oracle_value = entry["test"]["best"][parameter]
            lines.append(
                f"| {name} | {parameter} | {entry['tuning']['image']} | {chosen} ({value:.2f}) | {at_chosen:.2f} "
                f"| {oracle} ({oracle_value:.2f}) |"
            )
    (RESULTS / "baseline_tuning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Evidence for the per-pixel weight convention (docs/weights.md): TV-DIP with the converted defaults against λ = 0.

CT (built-in phantom, sparse views) and denoising, small sizes and a narrow skip net so that it runs on a CPU in
minutes. On CT it also runs the weight that ``tv_ct.yaml`` had before the convention (dival's gamma = 1e-4 on the
summed TV next to a mean data term over our normalised operator, i.e. λ = 1e-4 · m per pixel), which swamped the
data term. EDIP's converted TV weight is the same number as TV-DIP's on CT (1.5e-4), so it is not run separately.

    python -m experiments.weights_check [--ct-size 64] [--steps 600] [--name weights_check]

Writes experiments/results/weights_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from untrained.run import build, compose
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
KEYS = ("final_psnr", "best_psnr", "best_step", "steps")


def run(overrides: list[str], output_dir: Path) -> dict:
    metrics = train(compose([*overrides, f"paths.output_dir={output_dir}"]))
    result = {key: metrics.get(key) for key in KEYS}
    result.update({k: v for k, v in metrics.items() if k.startswith("baseline_") and k.endswith("_psnr")})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct-size", type=int, default=64)
    parser.add_argument("--denoising-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="weights_check", help="results file name (experiments/results/<name>.*)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / "outputs" / "experiments" / "weights_check"
    common = [
        f"seed={args.seed}",
        f"trainer.max_steps={args.steps}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "callbacks=none",
        "method=tv",
        "network.channels_down=[32,32,32,32]",
        "network.channels_up=[32,32,32,32]",
        "network.channels_skip=[4,4,4,4]",
    ]
    ct = [*common, "task=ct", f"task.size={args.ct_size}"]
    cfg = compose(ct)
    default_ct = float(cfg.method.tv_weight)
    views = int(cfg.task.views)
    rows = []

    def record(task: str, label: str, weight: float, overrides: list[str]) -> None:
        result = run([*overrides, f"method.tv_weight={weight}"], out / task / f"tv_weight_{weight:.3g}")
        rows.append({"task": task, "weight": label, "tv_weight": weight, **result})
        print(rows[-1], flush=True)

    record("ct", "0 (DIP)", 0.0, ct)
    record("ct", "converted default", default_ct, ct)
    record("ct", "10 x default", 10 * default_ct, ct)
    # The measurement's size m = views × detectors (ODL's default detector count for the grid).
    problem = build(compose(ct).task, "task")
    m = views * problem.y.shape[-1]
    record("ct", "old tv_ct.yaml (1e-4 summed)", 1e-4 * m, ct)

    denoising = [*common, "task=denoising", f"task.size={args.denoising_size}"]
    default_denoising = float(compose(denoising).method.tv_weight)
    record("denoising", "0 (DIP)", 0.0, denoising)
    record("denoising", "converted default", default_denoising, denoising)

    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "ct_size": args.ct_size,
        "denoising_size": args.denoising_size,
        "steps": args.steps,
        "seed": args.seed,
        "ct_measurements": m,
        "ct_per_pixel_data_scale": problem.per_pixel_data_scale(),
        "rows": rows,
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Weight convention check (experiments/weights_check.py)",
        "",
        f"TV-DIP (`method=tv`), skip net 4 × 32 channels, {args.steps} Adam steps, seed {args.seed}; CT "
        f"{args.ct_size}² built-in phantom, {views} views (m = {m}, c = m / (N ||A||²) = "
        f"{problem.per_pixel_data_scale():.3f}); denoising {args.denoising_size}². λ per pixel (docs/weights.md).",
        "",
        "| task | λ | value | final PSNR | best PSNR (step) | baselines |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        baselines = ", ".join(
            f"{k.removeprefix('baseline_').removesuffix('_psnr')} {v:.2f}"
            for k, v in row.items()
            if k.startswith("baseline_") and isinstance(v, float) and math.isfinite(v)
        )
        lines.append(
            f"| {row['task']} | {row['weight']} | {row['tv_weight']:.3g} | {row['final_psnr']:.2f} | "
            f"{row['best_psnr']:.2f} ({row['best_step']}) | {baselines} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

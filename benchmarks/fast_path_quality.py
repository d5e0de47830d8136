"""Does the fast path change the reconstruction? Best PSNR of each fast-path variant against fp32 eager, same seed.

    python -m benchmarks.fast_path_quality [--size 32] [--steps 300] [--small-network] [overrides...]

Target (issue 8): best PSNR within 0.1 dB of fp32 eager. Writes benchmarks/results/fast_path_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.run import QUICK_NETWORK, ROOT, compose_config, machine, switches
from untrained.train import train

VARIANTS = {  # key: (description, switches)
    "eager": ("fp32 eager", switches()),
    "graph": ("CUDA graph of the step (fp32)", switches(cuda_graphs=True)),
    "bf16": ("bf16 autocast + channels-last", switches(autocast=True, channels_last=True)),
    "channels_last": ("channels-last (fp32)", switches(channels_last=True)),
    "compile": ("torch.compile (inductor)", switches(compile=True)),
    "all": ("all (bf16 + channels-last + compile + CUDA graph)", switches(True, True, True, True)),
}


def write_report(args, rows: list[dict]) -> dict:
    report = {"machine": machine(), "settings": vars(args), "rows": rows}
    chosen = dict(o.split("=", 1) for o in args.override if o.split("=", 1)[0] in ("task", "method", "network"))
    problem = " ".join(f"{k}={v}" for k, v in chosen.items()) or "denoising"
    lines = [
        f"# Fast path quality: {problem}, {args.size}², {args.steps} steps, seed {args.seed}"
        f"{', small network' if args.small_network else ''} ({report['machine'].get('gpu', 'CPU')})",
        "",
        "| variant | best PSNR | Δ vs the first | final PSNR | best step | wall s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['best_psnr']:.3f} | {r['best_psnr_minus_first']:+.3f} | {r['final_psnr']:.3f} | "
        f"{r['best_step']} | {r['wall_s']:.0f} |"
        for r in rows
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fast_path_quality.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "fast_path_quality.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small-network", action="store_true", help="the tests' 3-scale, 16-channel skip network")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="variants to run; the first is the reference (default: all)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("override", nargs="*")
    args = parser.parse_args(argv)
    rows = []
    for name, variant in (VARIANTS[key] for key in args.variants):
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [
                f"task.size={args.size}",
                f"trainer.max_steps={args.steps}",
                f"seed={args.seed}",
                "logger=none",
                "callbacks=default",  # all steps: the variants' best PSNR over the same run length
                "trainer.accelerator=cpu" if not torch.cuda.is_available() else "trainer.accelerator=gpu",
                f"paths.output_dir={tmp}",
                *(QUICK_NETWORK["skip"] if args.small_network else []),
                *variant,
                *args.override,
            ]
            start = time.perf_counter()
            metrics = train(compose_config(overrides))
            rows.append(
                {
                    "variant": name,
                    "best_psnr": metrics["best_psnr"],
                    "final_psnr": metrics["final_psnr"],
                    "best_step": metrics["best_step"],
                    "wall_s": time.perf_counter() - start,
                    "performance": metrics["performance"],  # what ran, not only what was asked for
                    "best_psnr_minus_first": metrics["best_psnr"]
                    - (rows[0]["best_psnr"] if rows else metrics["best_psnr"]),
                }
            )
        report = write_report(args, rows)  # after every variant: a run cut short keeps the finished rows
    print((Path(args.out) / "fast_path_quality.md").read_text())
    return report


if __name__ == "__main__":
    main()

"""Does bf16 change batched reconstructions? Each member's best PSNR with bf16 weights against fp32, vmapped.

    python -m benchmarks.batched_quality [--size 128] [--steps 3000] [--batch 8] [--name NAME] [overrides...]

Fits the same B members (seeds seed … seed+B−1) three times in ``batching.mode=vmap`` with the step's CUDA graph
on a GPU: fp32 twice (the second run's differences are the fp32 spread: GPU kernels are not bit-reproducible)
and with bf16 weights (``performance.autocast=true``). Target (issue 21): every member's bf16 best PSNR within
the fp32 spread. Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.run import QUICK_NETWORK, ROOT, compose_config, machine, switches
from untrained.train import train


def fit_members(args, flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "task=denoising",
            "network=skip",
            f"task.size={args.size}",
            "task.bm3d=false",  # a CPU baseline per member, not what is measured
            f"trainer.max_steps={args.steps}",
            f"seed={args.seed}",
            f"batching.size={args.batch}",
            "batching.mode=vmap",
            "logger=none",
            f"trainer.accelerator={'gpu' if torch.cuda.is_available() else 'cpu'}",
            f"paths.output_dir={tmp}",
            *(QUICK_NETWORK["skip"] if args.small_network else []),
            *flags,
            *args.override,
        ]
        start = time.perf_counter()
        metrics = train(compose_config(overrides))
        return {
            "best_psnr": [m["best_psnr"] for m in metrics["members"]],
            "wall_s": time.perf_counter() - start,
            "performance": metrics["performance"],
        }


def write_report(args, argv, runs: dict[str, dict], graph: bool) -> dict:
    members = range(args.batch)
    fp32, bf16 = runs["fp32"]["best_psnr"], runs.get("bf16", {}).get("best_psnr")
    again = runs.get("fp32_again", {}).get("best_psnr")
    report = {"machine": machine(), "settings": vars(args), "runs": runs}
    if bf16:
        report["bf16_minus_fp32_db"] = [b - a for a, b in zip(fp32, bf16)]
    if again:
        report["fp32_spread_db"] = [abs(a - b) for a, b in zip(fp32, again)]
        report["bf16_within_fp32_spread"] = [
            abs(d) <= s for d, s in zip(report["bf16_minus_fp32_db"], report["fp32_spread_db"])
        ]

    def cell(values, b, fmt=".3f"):
        return format(values[b], fmt) if values else "–"

    lines = [
        f"# Batched quality: denoising {args.size}², skip net, {args.steps} steps, B = {args.batch} (vmap"
        f"{' + CUDA graph' if graph else ''}), seeds {args.seed}–{args.seed + args.batch - 1}",
        "",
        f"Machine: {report['machine'].get('gpu', report['machine'].get('cpu', 'CPU'))}. Command: "
        f"`python -m benchmarks.batched_quality {' '.join(sys.argv[1:] if argv is None else argv)}`.",
        "",
        "| member | fp32 best PSNR | fp32 again | fp32 spread | bf16 best PSNR | bf16 − fp32 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b} | {cell(fp32, b)} | {cell(again, b)} | {cell(report.get('fp32_spread_db'), b)} "
        f"| {cell(bf16, b)} | {cell(report.get('bf16_minus_fp32_db'), b, '+.3f')} |"
        for b in members
    ]
    lines += ["", "Wall s: " + ", ".join(f"{k} {v['wall_s']:.0f}" for k, v in runs.items())]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small-network", action="store_true", help="the tests' 3-scale, 16-channel skip network")
    parser.add_argument("--name", default="batched_quality")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("override", nargs="*")
    args = parser.parse_args(argv)
    graph = torch.cuda.is_available()
    runs: dict[str, dict] = {}
    for name, autocast in [("fp32", False), ("bf16", True), ("fp32_again", False)]:
        runs[name] = fit_members(args, switches(autocast=autocast, cuda_graphs=graph))
        print(name, json.dumps(runs[name]), flush=True)
        report = write_report(args, argv, runs, graph)  # after every run: a stage cut short keeps what finished
    print((Path(args.out) / f"{args.name}.md").read_text())
    return report


if __name__ == "__main__":
    main()

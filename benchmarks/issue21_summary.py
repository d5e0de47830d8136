"""Issue 21's three GPU targets, read off the result files that ``benchmarks/gpu_issue21.sh`` writes.

    python -m benchmarks.issue21_summary [--results benchmarks/results] [--name gpu-issue21]

Targets: ≥ 3,000 reconstructions per GPU-hour in batched 128² denoising fits (skip net, 3000 steps) with every
member's bf16 best PSNR within the fp32 spread; framework overhead ≤ 5 % against the bare fast loop; CT 256²,
18 views: steps/s with task.impl=torch on the fast path ≥ 3× the plain loop with astra_cuda.
Writes <results>/<name>.{json,md}; a missing input file leaves its target unmeasured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def variant(report: dict | None, name: str) -> dict | None:
    for combo in (report or {}).get("results", []):
        for row in combo.get("variants", []):
            if row["variant"] == name:
                return row
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="gpu-issue21")
    args = parser.parse_args(argv)
    targets = {}
    batched = load(args.results, "gpu-batched-bf16-128")
    rows = [row for block in (batched or {}).get("batched", []) for row in block["rows"]]
    if rows:
        best = max(rows, key=lambda r: r["reconstructions_per_hour"])
        targets["reconstructions_per_hour"] = {
            "target": ">= 3000",
            "best": best["reconstructions_per_hour"],
            "at": f"{best['mode']}, B = {best['batch_size']}",
            "met": best["reconstructions_per_hour"] >= 3000,
            "all": {f"{r['mode']} B={r['batch_size']}": round(r["reconstructions_per_hour"]) for r in rows},
        }
    quality = load(args.results, "gpu-batched-quality-128")
    if quality:
        targets["bf16_members_within_fp32_spread"] = {
            "target": "every member",
            "met": all(quality["bf16_within_fp32_spread"]),
            "bf16_minus_fp32_db": quality["bf16_minus_fp32_db"],
            "fp32_spread_db": quality["fp32_spread_db"],
        }
    fast = variant(load(args.results, "gpu-overhead-denoising-256"), "untrained_fast")
    if fast and "overhead_pct" in fast:
        targets["framework_overhead_pct"] = {"target": "<= 5", "value": fast["overhead_pct"]}
        targets["framework_overhead_pct"]["met"] = fast["overhead_pct"] <= 5
    torch_fast = variant(load(args.results, "gpu-ct-torch"), "untrained_fast")
    astra_plain = variant(load(args.results, "gpu-ct-astra-cuda"), "plain")
    if torch_fast and astra_plain:
        ratio = torch_fast["steps_per_second"] / astra_plain["steps_per_second"]
        targets["ct_speedup_vs_plain_astra_cuda"] = {
            "target": ">= 3",
            "value": ratio,
            "torch_fast_steps_per_s": torch_fast["steps_per_second"],
            "astra_cuda_plain_steps_per_s": astra_plain["steps_per_second"],
            "met": ratio >= 3,
        }
    lines = [f"# Issue 21 targets on the GPU ({args.name})", "", "| target | measured | met |", "|---|---|---|"]
    for key, t in targets.items():
        measured = t.get("value", t.get("best", t.get("bf16_minus_fp32_db")))
        shown = f"{measured:.2f}" if isinstance(measured, float) else json.dumps(measured)
        lines.append(f"| {key} ({t['target']}) | {shown}{' at ' + t['at'] if 'at' in t else ''} | {t['met']} |")
    missing = {"reconstructions_per_hour", "bf16_members_within_fp32_spread", "framework_overhead_pct"}
    missing |= {"ct_speedup_vs_plain_astra_cuda"}
    lines += ["", "Not measured (input file missing): " + (", ".join(sorted(missing - set(targets))) or "none")]
    (args.results / f"{args.name}.json").write_text(json.dumps(targets, indent=2) + "\n")
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return targets


if __name__ == "__main__":
    main()

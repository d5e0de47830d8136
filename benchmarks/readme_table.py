"""README's speed table, generated from the recorded benchmark results (``benchmarks/results/*.json``).

    python -m benchmarks.readme_table           # rewrite the block between the speed-table markers in README.md
    python -m benchmarks.readme_table --check   # exit 1 when README.md's block is not what the results give

One row per (result file, framework variant, network): the framework's median seconds per step and its
speed against the plain PyTorch loop of the reference repositories, timed in the same process. Where a
result holds several tasks for a network, the row gives the range over them. Which results and variants
are shown is chosen in ``ROWS``; the numbers come from the JSON files alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"

# (result file without .json, framework variant, one row per network or one row for "all" networks).
ROWS = [
    ("gpu-denoising-overhead", "untrained_fast", "network"),
    ("gpu-mri-overhead", "untrained_fast", "network"),
    ("cpu-amx-denoising-skip", "untrained_default", "network"),
    ("cpu-amx-mri-aseqdip-skip", "untrained_default", "network"),
    ("cpu-amx-fast-path", "untrained_default", "network"),
    ("cpu-amx-fast-path", "untrained_channels_last", "network"),
    ("cpu-all-tasks", "untrained", "all"),
]
VARIANTS = {
    "untrained": "fp32 eager",
    "untrained_fast": "all on (GPU default)",
    "untrained_default": "default (`auto`)",
    "untrained_channels_last": "channels-last fp32 (no AMX)",
}
QUICK_SIZE = 32  # benchmarks.run's --quick task size


def machine(result: dict) -> str:
    m = result["machine"]
    torch_version = ".".join(m["torch"].split("+")[0].split(".")[:2])
    if m.get("gpu"):
        return f"{m['gpu'].replace('NVIDIA ', '').split(' ')[0]}, torch {torch_version}"
    return f"CPU, {m['cpu_count']} cores, torch {torch_version}"


def task_size(task: str, overrides: list[str], quick: bool) -> str:
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("task.size=")]
    if given:
        return given[-1]
    if quick:
        return str(QUICK_SIZE)
    conf = ROOT / "conf" / "task" / f"{task}.yaml"
    size = yaml.safe_load(conf.read_text()).get("size") if conf.exists() else None
    return "default" if size is None else str(size)


def method_of(overrides: list[str]) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), "?")


def span(values: list[float], digits: int) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}–{high}"


def rows_of(name: str, variant: str, per: str) -> list[str]:
    result = json.loads((RESULTS / f"{name}.json").read_text())
    quick = bool(result["settings"].get("quick"))
    by_network: dict[str, list[tuple[dict, dict]]] = {}
    for combo in result["results"]:
        timed = {v["variant"]: v for v in combo.get("variants", [])}
        if variant in timed:
            key = combo["network"] if per == "network" else "all networks"
            by_network.setdefault(key, []).append((combo, timed[variant]))
    if not by_network:
        raise SystemExit(f"{name}.json has no variant {variant!r}: fix benchmarks/readme_table.py ROWS.")
    lines = []
    for network, found in by_network.items():
        combos = [combo for combo, _ in found]
        if len(combos) == 1:
            combo = combos[0]
            problem = f"{combo['task']} × {network} ({method_of(combo['overrides'])})"
            size = task_size(combo["task"], combo["overrides"], quick)
        else:
            tasks = len({c["task"] for c in combos})
            problem = f"{tasks} tasks × {network}" if per == "network" else f"{len(combos)} task × network pairs"
            sizes = [task_size(c["task"], c["overrides"], quick) for c in combos]
            known = [int(s) for s in sizes if s.isdigit()]
            size = span(known, 0) if known else "defaults"
        seconds = [v["seconds_per_step"] for _, v in found]
        speedups = [v["speedup_vs_plain"] for _, v in found]
        step = span([s * 1000 for s in seconds], 1) + " ms" if max(seconds) < 0.1 else span(seconds, 3) + " s"
        lines.append(
            f"| {machine(result)} | {problem} | {size} | {VARIANTS.get(variant, variant)} | {step} "
            f"| **{span(speedups, 2)}×** | [`{name}`](benchmarks/results/{name}.md) |"
        )
    return lines


def table() -> str:
    head = [
        "| machine | task × network (method) | size | framework | s/step | vs plain loop | result |",
        "|---|---|---|---|---|---|---|",
    ]
    body = [line for name, variant, per in ROWS for line in rows_of(name, variant, per)]
    return "\n".join(head + body)


def with_table(readme: str) -> str:
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise SystemExit(f"README.md needs one {BEGIN} and one {END} line.")
    before, rest = readme.split(BEGIN)
    _, after = rest.split(END)
    generated = "<!-- generated by `python -m benchmarks.readme_table` from benchmarks/results/*.json -->"
    return f"{before}{BEGIN}\n{generated}\n\n{table()}\n\n{END}{after}"


def is_stale(readme_path: Path = README) -> bool:
    text = readme_path.read_text()
    return with_table(text) != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's table is stale")
    args = parser.parse_args(argv)
    if args.check:
        if is_stale():
            print("README.md's speed table is stale: run python -m benchmarks.readme_table", file=sys.stderr)
            return 1
        return 0
    README.write_text(with_table(README.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One fit per process, with glibc's malloc defaults and with ``performance.reuse_freed_memory``.

    python -m benchmarks.malloc [--task denoising] [--network skip] [--steps 8] [--warmup 3] [overrides...]

malloc's state is process-wide, so every measurement runs in a fresh process, as a user's run does: the
framework's step in the bare loop of ``benchmarks.run`` (``fit_bare``), for fp32 and for the default
switches (bf16 + channels-last on AMX CPUs), each with malloc's defaults and with freed memory reused.
Page faults per step are the difference between a fit of ``warmup + 2 * steps`` and one of
``warmup + steps`` steps, over ``steps``: the steady state, without the one-off faults of setting up.
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.run import EAGER, ROOT, PeakMemory, compose_config, fit_bare, machine
from untrained.speed.memory import reuse_freed_memory

SWITCHES = {"fp32": EAGER, "default": []}  # default: every switch at auto


def one_fit(args) -> dict:
    """In this (fresh) process: one bare fit of ``args.length`` steps; its step times and page faults."""
    reused = reuse_freed_memory() if args.reuse else False
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(
            [
                f"task={args.task}",
                f"network={args.network}",
                "trainer.accelerator=cpu",
                "logger=none",
                f"paths.output_dir={tmp}",
                f"trainer.max_steps={args.length}",
                *SWITCHES[args.switches],
                *args.override,
            ]
        )
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = fit_bare(cfg, torch.device("cpu"), PeakMemory(torch.device("cpu")))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
    return {"reuse_freed_memory": reused, "seconds": seconds, "faults": faults}


def in_fresh_process(args, switches: str, reuse: bool, length: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.malloc",
        "--one-fit",
        "--switches",
        switches,
        "--length",
        str(length),
        "--task",
        args.task,
        "--network",
        args.network,
        *(["--reuse"] if reuse else []),
        *args.override,
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="denoising")
    parser.add_argument("--network", default="skip")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="cpu-malloc")
    parser.add_argument("--one-fit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--switches", choices=list(SWITCHES), help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("override", nargs="*")
    args = parser.parse_args(argv)
    if args.one_fit:
        print(json.dumps(one_fit(args)))
        return {}
    rows = []
    for switches in SWITCHES:
        for reuse in (False, True):
            short = in_fresh_process(args, switches, reuse, args.warmup + args.steps)
            long = in_fresh_process(args, switches, reuse, args.warmup + 2 * args.steps)
            timed = short["seconds"][args.warmup - 1 :] + long["seconds"][args.warmup - 1 :]
            rows.append(
                {
                    "switches": switches,
                    "reuse_freed_memory": long["reuse_freed_memory"],
                    "seconds_per_step": statistics.median(timed),
                    "spread": [min(timed), max(timed)],
                    "page_faults_per_step": (long["faults"] - short["faults"]) / args.steps,
                }
            )
    report = {"machine": machine(), "settings": vars(args), "rows": rows}
    lines = [
        f"# One fit per process: glibc malloc defaults against performance.reuse_freed_memory "
        f"({args.task}, {args.network})",
        "",
        f"- machine: {report['machine'].get('cpu')} ({report['machine']['cpu_count']} cores), "
        f"torch {report['machine']['torch']}",
        f"- command: `python -m benchmarks.malloc {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- {args.warmup} warm-up + {args.steps} and {2 * args.steps} timed steps, two fresh processes per row; "
        "page faults/step is the difference of their counts over the extra steps (setting up varies by a few "
        "thousand faults between processes, so near 0 it can come out negative)",
        "",
        "| switches | freed memory reused | s/step | page faults/step |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['switches']} | {'yes' if r['reuse_freed_memory'] else 'no (glibc defaults)'} | "
        f"{r['seconds_per_step']:.4f} | {r['page_faults_per_step']:,.0f} |"
        for r in rows
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()

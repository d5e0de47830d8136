"""Before/after check for refactors: one tiny CPU fit per method (and a few code paths), recorded bit for bit.

    python -m benchmarks.metrics_snapshot --out before.json          # record (from the repository root)
    python -m benchmarks.metrics_snapshot --out after.json           # ... again after the change
    python -m benchmarks.metrics_snapshot --compare before.json after.json   # exit 1 if any run differs

Each run is ``python train.py <overrides> hydra.run.dir=<tmp> logger=none`` in a subprocess with one CPU thread;
only the command line and the files a run writes are used, so that the script runs unchanged across
refactors of the code behind them. Recorded per run: metrics.json without its wall times and device name, history.json,
and the SHA-256 of every .npy in the run directory and its member_*/ subdirectories. Equality is bit for bit on one
machine; other CPUs (and the ``auto`` performance switches, which turn bf16 on where the CPU has AMX) give other values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Every run: a quiet CPU fit of 12 steps with host syncs every 4.
COMMON = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
    "seed=0",
    "trainer.max_steps=12",
    "module.log_every=4",
]
# The tests' small networks (tests/conftest.py FAST, tests/test_methods_reparam.py).
SKIP = [
    "task.size=32",
    "network.channels_down=[16,16,16]",
    "network.channels_up=[16,16,16]",
    "network.channels_skip=[4,4,4]",
]
DRP = ["task.size=32", "network.channels_down=[8]", "network.channels_up=[8]", "network.channels_skip=[2]"]
DECODER = ["task.size=32", "network.channels=16", "network.blocks=3", "method.input.channels=16"]
CT = ["task=ct", "task.size=32", "task.views=12", "task.tv_max_iterations=5"]
MRI = ["task=mri", "task.size=32", "task.coils=4", "task.cg_iterations=2"]
# Per method: the task and network it needs and settings that reach its stages within 12 steps. A method not
# listed here (added later) runs with the skip net on denoising.
METHOD_SETTINGS = {
    "adp": ["task=integration_1d", "task.size=32", "network=unrolled_pg", "method.lower_max_iter=50"],
    "deep_decoder": DECODER,
    "deepred": [*SKIP, "method.denoise_every=4"],
    "dop": [*SKIP, "task.noise=salt_pepper", "task.noise_level=0.3"],  # the paper's corruption
    "drp": DRP,
    "edip_pretrain": [*CT, *SKIP[1:], "method.batch_size=2"],
    "edip": [*CT, *SKIP[1:], "method.checkpoint={dir:method=edip_pretrain}"],
    "oes": [*SKIP, "method.mask_steps=6"],  # 6 mask steps, then 6 on the sparse network
    "self_guided": [*SKIP, "method.num_perturbations=2"],
}
NEEDS = {"edip": "method=edip_pretrain"}  # stage 2 starts from stage 1's weights
# Words of metrics.json keys that hold wall times or the machine: dropped (at any depth).
VOLATILE = ("time", "seconds", "elapsed", "per_hour", "device")


@dataclass
class Run:
    name: str
    overrides: list[str]
    # Further invocations in the same run directory after the first (a resumed run): extra overrides each.
    then: list[list[str]] = field(default_factory=list)
    needs: str | None = None  # a run whose directory {dir:<name>} the overrides use


def batch_option(name: str) -> str:
    """The batched-fit option: `batching.<name>` once conf/batching/ exists, `performance.batch_<name>` before."""
    return f"batching.{name}" if (CONF / "batching").is_dir() else f"performance.batch_{name}"


def runs() -> list[Run]:
    methods = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    found = [Run(f"method={m}", [f"method={m}", *METHOD_SETTINGS.get(m, SKIP)], needs=NEEDS.get(m)) for m in methods]
    fp32 = ["performance.autocast=false", "performance.channels_last=false"]
    callbacks = [
        "trainer.enable_progress_bar=true",  # the callback groups bring the progress bar
        "trainer.max_steps=24",
        "callbacks.early_stopping.patience=4",
        "callbacks.early_stopping.check_every=4",
    ]
    paths = [
        Run("vanilla-fp32", ["method=vanilla", *SKIP, *fp32]),
        Run("mri-aseqdip", [*MRI, "method=aseqdip", *SKIP[1:]]),
        Run("ct-vanilla", [*CT, "method=vanilla", *SKIP[1:]]),
        Run("es_wmv", ["method=vanilla", *SKIP, "callbacks=es_wmv", "callbacks.early_stopping.window=4", *callbacks]),
        Run("es_emv", ["method=vanilla", *SKIP, "callbacks=es_emv", "callbacks.early_stopping.start=2", *callbacks]),
        Run("batched-2", ["method=vanilla", *SKIP, f"{batch_option('size')}=2"]),
        Run("batched-2-fp32", ["method=vanilla", *SKIP, *fp32, f"{batch_option('size')}=2"]),
        # 8 steps with a checkpoint kept, then the same directory to 12 steps: resumes from step 8.
        Run(
            "resumed",
            ["method=vanilla", *SKIP, "trainer.max_steps=8", "checkpoint.every_n_steps=4", "checkpoint.keep=true"],
            then=[["trainer.max_steps=12", "checkpoint.keep=false"]],
        ),
    ]
    return found + paths


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONHASHSEED="0",
        WANDB_MODE="disabled",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    return env


def without_volatile(value):
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if not any(w in k.lower() for w in VOLATILE)}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def npy_hashes(run_dir: Path) -> dict[str, str]:
    files = sorted(run_dir.glob("*.npy")) + sorted(run_dir.glob("member_*/*.npy"))
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def record(run_dir: Path) -> dict:
    """metrics.json (no wall times), history.json and .npy hashes of a run directory and its member_*/ ones."""
    out = {}
    for sub in [run_dir, *sorted(run_dir.glob("member_*"))]:
        prefix = "" if sub == run_dir else f"{sub.name}/"
        for name in ("metrics", "history"):
            path = sub / f"{name}.json"
            if path.is_file():
                data = json.loads(path.read_text())
                out[f"{prefix}{name}"] = without_volatile(data) if name == "metrics" else data
    out["npy_sha256"] = npy_hashes(run_dir)
    return out


def execute(run: Run, run_dir: Path, dirs: dict[str, Path]) -> dict:
    start = time.perf_counter()
    overrides = _resolve(run.overrides, dirs)
    commands = []
    for extra in [[], *run.then]:
        args = [sys.executable, "train.py", *merged(COMMON, overrides, extra), f"hydra.run.dir={run_dir}"]
        commands.append(shlex.join(args[1:]))
        done = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"error": f"exit {done.returncode}: " + " | ".join(tail), "commands": commands}
    result = record(run_dir)
    result["commands"] = [c.replace(str(run_dir), "<run_dir>") for c in commands]
    for n, d in dirs.items():
        result["commands"] = [c.replace(str(d), f"<{n} run_dir>") for c in result["commands"]]
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def merged(*lists: list[str]) -> list[str]:
    """One override per key, the last given winning (Hydra refuses two values for a config group)."""
    by_key = {}
    for o in (o for overrides in lists for o in overrides):
        by_key[o.split("=", 1)[0]] = o
    return list(by_key.values())


def _resolve(overrides: list[str], dirs: dict[str, Path]) -> list[str]:
    resolved = []
    for o in overrides:
        for n, d in dirs.items():
            o = o.replace(f"{{dir:{n}}}", str(d))
        resolved.append(o)
    return resolved


def header() -> dict:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return {
        "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
        "cpu": cpu,
        "cpu_amx": "amx_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": "python -m benchmarks.metrics_snapshot " + shlex.join(sys.argv[1:]),
        "threads": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1",
        "common_overrides": COMMON,
    }


def snapshot(out: Path, jobs: int, only: list[str] | None) -> int:
    wanted = set(only or []) | {r.needs for r in runs() if r.name in (only or []) and r.needs}
    plan = [r for r in runs() if not only or r.name in wanted]  # with the runs they need
    results: dict[str, dict] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metrics-snapshot-") as tmp:
        dirs = {r.name: Path(tmp) / r.name.replace("=", "_") for r in plan}

        def one(run: Run) -> None:
            if run.needs and "error" in results.get(run.needs, {"error": "not run"}):
                results[run.name] = {"error": f"needs {run.needs}, which failed"}
            else:
                results[run.name] = execute(run, dirs[run.name], {n: dirs[n] for n in dirs if n == run.needs})
            status = results[run.name].get("error") or f"ok ({results[run.name]['seconds']} s)"
            print(f"{run.name}: {status}", flush=True)

        with ThreadPoolExecutor(jobs) as pool:  # runs others need first, the runs that need them after
            list(pool.map(one, [r for r in plan if not r.needs]))
            list(pool.map(one, [r for r in plan if r.needs]))
    data = {"header": header(), "seconds": round(time.perf_counter() - start, 1), "runs": dict(sorted(results.items()))}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    failed = [n for n, r in results.items() if "error" in r]
    print(f"{len(results) - len(failed)}/{len(results)} runs ok in {data['seconds']} s → {out}")
    return 1 if failed else 0


def differences(before, after, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else key
            if key not in after:
                found.append(f"{where}: only before ({_short(before[key])})")
            elif key not in before:
                found.append(f"{where}: only after ({_short(after[key])})")
            else:
                found += differences(before[key], after[key], where)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{path}[{i}]")]
        return found[:3] + ([f"{path}: {len(found) - 3} more entries differ"] if len(found) > 3 else [])
    return [] if before == after else [f"{path}: {_short(before)} → {_short(after)}"]


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


IGNORED = ("commands", "seconds")  # a run's entries that are not its results


def compare(before_path: Path, after_path: Path) -> int:
    before, after = (json.loads(p.read_text()) for p in (before_path, after_path))
    for side, data in (("before", before), ("after", after)):
        h = data["header"]
        print(f"{side}: commit {h['commit']}, {h['cpu']}, torch {h['torch']}")
    if (before["header"]["cpu"], before["header"]["torch"]) != (after["header"]["cpu"], after["header"]["torch"]):
        print("warning: other CPU or torch version: values need not be bit-for-bit equal")
    differ = 0
    for name in sorted(set(before["runs"]) | set(after["runs"])):
        b, a = before["runs"].get(name), after["runs"].get(name)
        if b is None or a is None:
            differ += 1
            print(f"{name}: only {'after' if b is None else 'before'}")
            continue
        # The filter again: a snapshot recorded with fewer VOLATILE words stays comparable.
        b, a = (
            {k: without_volatile(v) if k.endswith("metrics") else v for k, v in r.items() if k not in IGNORED}
            for r in (b, a)
        )
        found = differences(b, a)
        differ += bool(found)
        print(f"{name}: " + ("identical" if not found else f"{len(found)} difference(s)"))
        for line in found:
            print(f"    {line}")
    print(f"{differ} run(s) differ" if differ else "all runs identical")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, help="run every fit and write the snapshot here")
    action.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--jobs", type=int, default=1, help="fits at once (each uses one thread)")
    parser.add_argument("--only", nargs="+", help="these runs only (names as printed)")
    action.add_argument("--list", action="store_true", help="print the runs and their overrides, run nothing")
    args = parser.parse_args(argv)
    if args.list:
        for run in runs():
            print(run.name, " ".join(merged(COMMON, run.overrides)), *(f"then {' '.join(t)}" for t in run.then))
        return 0
    if args.compare:
        return compare(*args.compare)
    return snapshot(args.out, args.jobs, args.only)


if __name__ == "__main__":
    sys.exit(main())

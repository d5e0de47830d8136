"""Chaos test of a sweep on a SLURM cluster: signals at random moments, and every task must still end right.

    python slurm/chaos.py --tasks 20 --seed 1           # the SLURM test tier's setting (tests/test_slurm.py)
    python slurm/chaos.py --tasks 100 --seed 7 --out experiments/results/slurm_soak.md   # the soak

One Hydra sweep through the SLURM launcher (the README's sweep command): mixed methods, single and batched fits
(batching.size=1,2), W&B offline, periodic checkpoints. While it runs, a seeded schedule sends array tasks
``scontrol requeue``, SIGTERM and SIGUSR2 (to the processes of its steps) at chosen moments of an attempt: its
first seconds (Python still importing, W&B starting), the moment a checkpoint has just been written, mid-training,
and while the outputs are written; some tasks are hit again on their next attempt. It passes when

- the sweep command exits 0 and every array task ends COMPLETED in sacct;
- every metrics.json (members' too) equals, in values (not times), that of the same task run undisturbed on this
  CPU (a local sweep of the same overrides, one thread, as the SLURM tasks have);
- every task's W&B runs are one run (one id across its attempts' offline directories);
- ``untrained.report`` counts every task, none failed.

Needs a running cluster (slurm/local_cluster.sh start). Prints, and with ``--out`` writes, a summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("vanilla", "tv", "self_guided", "deep_decoder", "aseqdip")
KINDS = ("requeue", "TERM", "USR2")
MOMENTS = ("startup", "checkpoint", "training", "outputs")
TIMES = {"wall_time_s", "seconds_per_step", "reconstructions_per_hour"}
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD"}
TINY = [
    "task.size=32",  # each method's own network at its default width
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "task.bm3d=false",  # BM3D's last digits differ between processes
    "task.nlm=false",
]


def sweep_overrides(tasks: int, steps: int) -> list[str]:
    """``tasks`` runs: every method × single and batched × as many seeds as needed (tasks must be a multiple of 10)."""
    if tasks % (2 * len(METHODS)):
        raise SystemExit(f"--tasks must be a multiple of {2 * len(METHODS)}")
    seeds = ",".join(str(s) for s in range(tasks // (2 * len(METHODS))))
    return [
        f"method={','.join(METHODS)}",
        "batching.size=1,2",
        f"seed={seeds}",
        f"trainer.max_steps={steps}",
        "checkpoint.every_n_steps=5",
        "module.log_every=5",
        *TINY,
    ]


@dataclass
class Hit:
    attempt: int  # 0: the first attempt, 1: the next one
    moment: str
    kind: str
    delay_s: float  # startup: seconds after the attempt started; training: after its training began
    sent_at: float | None = None
    armed_at: float | None = None  # training: when the attempt's first checkpoint was seen (its training had begun)
    note: str = ""


@dataclass
class Task:
    index: int
    hits: list[Hit] = field(default_factory=list)
    attempts: int = 0
    running: bool = False
    started: float = 0.0  # time.monotonic() when the current attempt started running
    started_wall: float = 0.0  # the same moment as time.time(), to compare with file times


def schedule(tasks: int, rng: random.Random, fraction: float = 0.6) -> dict[int, list[Hit]]:
    """A hit on ``fraction`` of the tasks (every kind × moment pairing used in turn), a second hit on a third of
    those, on their next attempt."""
    chosen = sorted(rng.sample(range(tasks), max(1, round(fraction * tasks))))
    pairs = list(itertools.product(MOMENTS, KINDS))
    rng.shuffle(pairs)
    plan: dict[int, list[Hit]] = {}
    for n, task in enumerate(chosen):
        moment, kind = pairs[n % len(pairs)]
        plan[task] = [Hit(0, moment, kind, delay(moment, rng))]
        if rng.random() < 1 / 3:
            plan[task].append(Hit(1, rng.choice(MOMENTS), rng.choice(KINDS), delay(moment, rng)))
    return plan


def delay(moment: str, rng: random.Random) -> float:
    # Training is timed from its start (the attempt's first checkpoint), not from the attempt's: a fixed wall-clock
    # delay lands after the fit on a fast machine, and the hit is never sent.
    return {"startup": rng.uniform(0.0, 4.0), "training": rng.uniform(0.2, 1.0)}.get(moment, 0.0)


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **options)


def task_states(array_job: str) -> dict[int, str]:
    shown = run(["squeue", "-h", "-r", "-j", array_job, "-o", "%i|%T"]).stdout.split()
    states = {}
    for line in shown:
        job, state = line.split("|")
        if "_" in job and job.split("_")[1].isdigit():
            states[int(job.split("_")[1])] = state
    return states


def sacct_states(array_job: str) -> dict[int, str]:
    shown = run(["sacct", "-j", array_job, "-X", "-n", "-P", "-o", "JobID,State"]).stdout.split()
    return {int(j.split("_")[1]): s for j, s in (line.split("|") for line in shown) if "_" in j and "[" not in j}


def due(hit: Hit, task: Task, run_dir: Path, now: float) -> bool:
    """Whether the hit's moment has come in the task's current attempt."""
    if hit.moment == "startup":
        return now - task.started >= hit.delay_s
    if hit.moment == "training":
        if hit.armed_at is None:
            if not written_since(run_dir / "checkpoints" / "last.ckpt", task.started_wall):
                return False
            hit.armed_at = now
        return now - hit.armed_at >= hit.delay_s
    watched = run_dir / ("checkpoints/last.ckpt" if hit.moment == "checkpoint" else "metrics.json")
    return written_since(watched, task.started_wall)


def written_since(path: Path, wall_time: float) -> bool:
    try:
        return path.stat().st_mtime >= wall_time
    except FileNotFoundError:
        return False


def step_pids(job: str) -> list[int]:
    """The processes of the job's steps (the run under srun, and its children SLURM tracks), not the batch shell."""
    raw = run(["squeue", "-h", "-j", job, "-o", "%A"]).stdout.split()  # listpids takes the job's own id only
    if not raw:
        return []
    shown = run(["scontrol", "listpids", raw[0]]).stdout.splitlines()[1:]
    return [int(f[0]) for f in (line.split() for line in shown) if len(f) >= 3 and f[2] not in ("batch", "extern")]


def send(hit: Hit, job: str) -> bool:
    """Deliver the hit; False when its target is not there yet (no step started: try again at the next poll).

    A signal goes to every process of the job's steps, as SLURM's ``--signal`` and ``scancel --signal`` deliver it
    (sent here with kill: scancel retries for minutes while a job is in a transition state, hitting later attempts)."""
    if hit.kind == "requeue":
        result = run(["scontrol", "requeue", job])
        hit.note = (result.stderr or "").strip()
    else:
        pids = step_pids(job)
        if not pids:
            return False
        for pid in pids:
            try:
                os.kill(pid, getattr(signal, f"SIG{hit.kind}"))
            except ProcessLookupError:
                pass
    hit.sent_at = time.monotonic()
    return True


def chaos_sweep(sweep_dir: Path, tasks: int, steps: int, seed: int, timeout_s: float, log=print) -> dict:
    """Run the sweep on SLURM under the seeded schedule; return what happened."""
    rng = random.Random(seed)
    plan = schedule(tasks, rng)
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={sweep_dir}",
        "logger=wandb",
        *sweep_overrides(tasks, steps),
    ]
    log("chaos: " + shlex.join(command[1:]))
    start = time.monotonic()
    sweep = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    state = {i: Task(i, plan.get(i, [])) for i in range(tasks)}
    array_job = None
    try:
        while sweep.poll() is None:
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"the sweep did not finish within {timeout_s:.0f} s")
            time.sleep(0.2)
            if array_job is None:
                folder = sweep_dir / ".submitit"
                submitted = next(folder.glob("*_0"), None) if folder.is_dir() else None
                if submitted is None:
                    continue
                array_job = submitted.name.split("_")[0]
            now = time.monotonic()
            for index, job_state in task_states(array_job).items():
                task = state[index]
                if job_state == "RUNNING" and not task.running:
                    task.running, task.started, task.started_wall = True, now, time.time()
                    task.attempts += 1
                elif job_state != "RUNNING":
                    task.running = False
                if not task.running:
                    continue
                for hit in task.hits:
                    if hit.sent_at is None and hit.attempt == task.attempts - 1:
                        if due(hit, task, sweep_dir / str(index), now) and send(hit, f"{array_job}_{index}"):
                            log(f"chaos: task {index} attempt {task.attempts}: {hit.kind} at {hit.moment}")
        output, _ = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            if array_job:
                run(["scancel", array_job])
    # The sweep returns once every task has written its result; slurmdbd records the last ends a moment later.
    deadline = time.monotonic() + 120
    states = sacct_states(array_job) if array_job else {}
    while array_job and any(s in ACTIVE for s in states.values()) and time.monotonic() < deadline:
        time.sleep(1)
        states = sacct_states(array_job)
    return {
        "command": shlex.join(["python", *command[1:]]),
        "array_job": array_job,
        "returncode": sweep.returncode,
        "output": output,
        "states": states,
        "hits": {i: t.hits for i, t in state.items() if t.hits},
        "attempts": {i: t.attempts for i, t in state.items()},
        "seconds": time.monotonic() - start,
    }


def reference_sweep(reference_dir: Path, tasks: int, steps: int) -> None:
    """The same tasks undisturbed, in this process's machine, one after another (one thread, like the tasks)."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        f"hydra.sweep.dir={reference_dir}",
        "logger=none",
        *sweep_overrides(tasks, steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the reference sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def metric_values(run_dir: Path) -> dict[str, dict]:
    """Every metrics.json under a run directory (a batched run has its members'), without the timings."""
    found = {}
    for path in sorted(run_dir.rglob("metrics.json")):
        if "wandb" in path.parts:
            continue
        found[str(path.relative_to(run_dir))] = without_times(json.loads(path.read_text()))
    return found


def without_times(values):
    if isinstance(values, dict):
        return {k: without_times(v) for k, v in values.items() if k not in TIMES}
    if isinstance(values, list):
        return [without_times(v) for v in values]
    return values


def check(result: dict, sweep_dir: Path, reference_dir: Path, tasks: int) -> dict:
    """The pass criteria (module docstring); returns counts and the list of problems."""
    from untrained.report import report
    from untrained.train import wandb_run_ids

    problems = []
    if result["returncode"] != 0:
        problems.append(f"the sweep command exited {result['returncode']}: {result['output'][-2000:]}")
    completed = sum(result["states"].get(i) == "COMPLETED" for i in range(tasks))
    if completed != tasks:
        problems.append(f"sacct states: {dict(Counter(result['states'].values()))}")
    identical, one_wandb_run = 0, 0
    for i in range(tasks):
        ours, theirs = metric_values(sweep_dir / str(i)), metric_values(reference_dir / str(i))
        if ours and ours == theirs:
            identical += 1
        else:
            differing = sorted(
                f"{f}:{k}"
                for f in theirs
                for k in theirs[f].keys() | ours.get(f, {}).keys()
                if theirs[f].get(k) != ours.get(f, {}).get(k)
            )
            problems.append(f"task {i}: metrics differ from the undisturbed run ({', '.join(differing[:6])})")
        ids = wandb_run_ids(sweep_dir / str(i))
        if len(ids) == 1:
            one_wandb_run += 1
        else:
            problems.append(f"task {i}: W&B runs {sorted(ids)}")
    rows = report(sweep_dir)
    reported = sum(r["runs"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    if reported != tasks or failed:
        problems.append(f"the report counts {reported} runs, {failed} failed")
    hits = [h for hs in result["hits"].values() for h in hs]
    sent = [h for h in hits if h.sent_at is not None]
    return {
        "tasks": tasks,
        "signals_sent": len(sent),
        "signals_by_kind": dict(Counter(h.kind for h in sent)),
        "signals_by_moment": dict(Counter(h.moment for h in sent)),
        "scheduled_not_sent": len(hits) - len(sent),
        "tasks_hit": sum(any(h.sent_at is not None for h in hs) for hs in result["hits"].values()),
        "requeued_attempts": sum(a - 1 for a in result["attempts"].values() if a > 1),
        "completed": completed,
        "identical": identical,
        "one_wandb_run": one_wandb_run,
        "reported": reported,
        "report_failed": failed,
        "sweep_exit": result["returncode"],
        "seconds": round(result["seconds"]),
        "problems": problems,
    }


def markdown(summary: dict, args, command: str) -> str:
    lines = [
        f"# SLURM chaos soak: {summary['tasks']} tasks, seed {args.seed}",
        "",
        f"Command: `python slurm/chaos.py --tasks {args.tasks} --seed {args.seed} --steps {args.steps}`",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"the local single-node SLURM (slurm/local_cluster.sh), {time.strftime('%Y-%m-%d')}.",
        f"Sweep: `{command}`",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    for key in (
        "tasks",
        "signals_sent",
        "signals_by_kind",
        "signals_by_moment",
        "tasks_hit",
        "requeued_attempts",
        "completed",
        "identical",
        "one_wandb_run",
        "reported",
        "report_failed",
        "sweep_exit",
        "seconds",
    ):
        lines.append(f"| {key} | {summary[key]} |")
    lines += ["", "Verdict: " + ("PASS" if not summary["problems"] else "FAIL")]
    lines += [f"- {p}" for p in summary["problems"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--dir", type=Path, default=None, help="where the sweeps go (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the summary (markdown) here")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default 60 per task + 10 min)")
    args = parser.parse_args(argv)
    import tempfile

    base = args.dir or Path(tempfile.mkdtemp(prefix="untrained-chaos-"))
    sweep_dir, reference_dir = base / "sweep", base / "reference"
    print(f"chaos: reference sweep (undisturbed, local) in {reference_dir}", flush=True)
    reference_sweep(reference_dir, args.tasks, args.steps)
    timeout = args.timeout or 60 * args.tasks + 600
    result = chaos_sweep(sweep_dir, args.tasks, args.steps, args.seed, timeout, log=lambda m: print(m, flush=True))
    summary = check(result, sweep_dir, reference_dir, args.tasks)
    text = markdown(summary, args, result["command"])
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if not summary["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())

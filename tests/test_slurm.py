"""A sweep through the real local SLURM (slurm/local_cluster.sh start): one job array, every task COMPLETED,
and a task killed with `scontrol requeue` while training resumes and ends exactly like its uninterrupted twin; the
chaos test (slurm/chaos.py): a 20-task sweep under signals at random moments ends as if undisturbed.

Skipped when no cluster answers, except under CI (``CI`` set), where .ci/run starts one: there it fails.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from untrained.report import report

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
TINY = [
    "task.size=32",
    "network.channels_down=[8,8]",
    "network.channels_up=[8,8]",
    "network.channels_skip=[2,2]",
    "callbacks=none",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "task.bm3d=false",  # BM3D's last digits differ between processes: the twins and the requeued run must agree
]


def cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (sinfo not found): run slurm/local_cluster.sh start"
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if state.returncode != 0 or not any(s in state.stdout for s in ("idle", "mix", "alloc")):
        reason = (state.stderr or state.stdout).strip()
        return f"the SLURM cluster is not running ({reason}): run slurm/local_cluster.sh start"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI starts a local SLURM (.ci/run), but {problem}")
        pytest.skip(problem)


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def sacct_states(job: str, duplicates: bool = False) -> list[tuple[str, str]]:
    """(task, state) of each array task; with ``duplicates`` also the earlier instances of requeued tasks."""
    command = ["sacct", "-j", job, "-X", "-n", "-P", "-o", "JobID,State"] + (["-D"] if duplicates else [])
    lines = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.split()
    return sorted(tuple(line.split("|")) for line in lines)


def test_sweep_is_one_job_array_and_a_requeued_task_resumes_exactly(cluster, tmp_path):
    # Tasks 0/1 and 2/3 are identical twins (seed 0 and 1); task 1 is requeued while training.
    sweep = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={tmp_path}",
            "seed=0,1",
            "+replica=a,b",
            f"trainer.max_steps={STEPS}",
            "checkpoint.every_n_steps=2",
            *TINY,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    job = None
    try:
        task = wait_for(lambda: next(tmp_path.glob(".submitit/*_1"), None), 120, "the array to be submitted").name
        job = task.split("_")[0]
        wait_for(lambda: (tmp_path / "1" / "checkpoints" / "last.ckpt").exists(), 240, "task 1 to train")
        subprocess.run(["scontrol", "requeue", task], check=True, timeout=30)
        output, _ = sweep.communicate(timeout=480)  # ~1.5 min on an idle 2-core machine
    finally:
        if sweep.poll() is None:
            sweep.kill()
            if job:
                subprocess.run(["scancel", job], timeout=30)
    assert sweep.returncode == 0, output[-3000:]

    # The sweep returns once every task has written its result; slurmdbd may record the last end a moment later.
    wait_for(
        lambda: not any(state in ACTIVE for _, state in sacct_states(job)), 60, "the accounting of every task's end"
    )
    assert sacct_states(job) == [(f"{job}_{i}", "COMPLETED") for i in range(4)]
    assert (f"{job}_1", "REQUEUED") in sacct_states(job, duplicates=True)
    metrics = []
    for run in range(4):
        values = json.loads((tmp_path / str(run) / "metrics.json").read_text())
        assert values["status"] == "completed" and values["steps"] == STEPS
        metrics.append({k: v for k, v in values.items() if k not in ("wall_time_s", "seconds_per_step")})
    assert "Resuming from" in (tmp_path / "1" / "train.log").read_text()
    assert metrics[0] == metrics[1] and metrics[2] == metrics[3] and metrics[0] != metrics[2]

    rows = report(tmp_path)
    assert [(r["setting"], r["runs"], r["failed"]) for r in rows] == [
        ("denoising replica=a", 2, 0),
        ("denoising replica=b", 2, 0),
    ]
    assert rows[0]["best_psnr"] == rows[1]["best_psnr"]


def load_chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "slurm" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_chaos_sweep_survives_signals_at_any_moment(cluster, tmp_path):
    """20 tasks (5 methods x single and batched fits x 2 seeds, W&B offline); SIGTERM, SIGUSR2 and scontrol requeue
    in a task's first seconds, just after a checkpoint, mid-training and while it writes its outputs, some tasks hit
    again on their next attempt. Seed: UNTRAINED_CHAOS_SEED (default 1)."""
    import wandb

    chaos = load_chaos()
    seed, tasks, steps = int(os.environ.get("UNTRAINED_CHAOS_SEED", "1")), 20, 40
    # The submitting process has used W&B (pytest has, in earlier tests): sbatch exports its service's address, which
    # the tasks must not share (a requeued attempt would be refused its run id as "in use").
    wandb.init(mode="offline", dir=tmp_path).finish()
    assert "WANDB_SERVICE" in os.environ
    chaos.reference_sweep(tmp_path / "reference", tasks, steps)
    result = chaos.chaos_sweep(tmp_path / "sweep", tasks, steps, seed, timeout_s=1800, log=lambda message: None)
    summary = chaos.check(result, tmp_path / "sweep", tmp_path / "reference", tasks)
    print(chaos.markdown(summary, type("Args", (), {"tasks": tasks, "seed": seed, "steps": steps}), result["command"]))
    assert not summary["problems"], summary["problems"]
    assert summary["sweep_exit"] == 0
    assert summary["completed"] == summary["identical"] == summary["one_wandb_run"] == summary["reported"] == tasks
    assert summary["signals_sent"] >= 10 and set(summary["signals_by_kind"]) == {"requeue", "TERM", "USR2"}

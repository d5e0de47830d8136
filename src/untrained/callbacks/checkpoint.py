"""Preemption-safe runs: periodic atomic checkpoints, a checkpoint on SLURM's signals, automatic resume.

SLURM warns a job before killing it: ``--signal`` (submitit: SIGUSR2, Lightning: SIGUSR1) before the time
limit, SIGTERM on preemption, ``scontrol requeue`` and ``scancel``. While training, this callback turns
all three into "finish the current step, write ``<dirpath>/last.ckpt``, stop": the handlers only note
the signal, so a checkpoint is always taken between two steps. Then :meth:`exit_after_signal` requeues
the job for SIGUSR1/SIGUSR2 (through the handler that was there before training, e.g. submitit's, which
also re-pickles its submission; otherwise with ``scontrol requeue``), leaves SIGTERM to SLURM (it
requeues a preempted or requeued job itself, and a cancelled job must stay cancelled), and exits.
When the job starts again in the same run directory, ``train()`` resumes from ``last.ckpt``.

A checkpoint holds what Lightning saves (network, optimizer, all buffers of the module and the method:
z, averages, masks, the best iterate; loop progress and step; every callback's ``state_dict``) plus the
module's host-side history and the RNG streams (:func:`rng_states`), so that a resumed CPU run ends
bit-for-bit like an uninterrupted one. Writes go to a temporary file that is renamed over the last
checkpoint, so a crash while writing never leaves a corrupt one.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from untrained.callbacks.base import StepCallback

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
CHECKPOINT_NAME = "last.ckpt"


class RunInterrupted(SystemExit):
    """The run stopped on a signal after writing its checkpoint; the process exits with 128 + signal.

    A ``SystemExit`` on purpose: Hydra's job runner and submitit record ordinary exceptions as a finished,
    failed job, whereas an interrupted run must simply end so that its requeued job resumes.
    """


def rng_states() -> dict:
    """The torch (CPU and CUDA), numpy and Python RNG states, in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss_next],
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = states["python"]
    random.setstate((version, tuple(python_state), gauss_next))


def slurm_job_id() -> str | None:
    """This job's id as ``scontrol`` takes it (``<array job>_<task>`` for an array task), or None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(StepCallback):
    """Checkpoints every ``every_n_steps`` steps (0 = never) and on SIGUSR1/SIGUSR2/SIGTERM; resumes from them.

    Args:
        dirpath: where ``last.ckpt`` lives (the run directory's ``checkpoints/``).
        every_n_steps: periodic checkpoints (0: only on signals).
        on_signal: catch SLURM's signals while training (otherwise they act as they would without this callback).
        resume: start from ``last.ckpt`` when it exists (a requeued job, a crashed run started again).
        requeue: on SIGUSR1/SIGUSR2 inside a SLURM job, requeue it (submitit's own handler is used where present).
        keep: keep ``last.ckpt`` after the run has finished (otherwise it is deleted once the outputs are written).
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0, on_signal: bool = True, resume: bool = True,
                 requeue: bool = True, keep: bool = False):
        if every_n_steps < 0:
            raise ValueError("checkpoint.every_n_steps must be >= 0 (0 = no periodic checkpoints).")
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self.on_signal, self.resume, self.requeue, self.keep = on_signal, resume, requeue, keep
        self.received: int | None = None  # the signal noted by the handler, acted on after the current step
        self.interrupted: int | None = None  # the signal the run stopped on
        self.elapsed_before = 0.0  # training seconds of the earlier segments of a resumed run
        self.outer_handlers: dict[int, object] = {}
        self.segment_start = time.perf_counter()

    @property
    def path(self) -> Path:
        return self.dirpath / CHECKPOINT_NAME

    def resume_path(self) -> str | None:
        """The checkpoint to pass to ``trainer.fit(ckpt_path=...)``, or None to start afresh."""
        if self.resume and self.path.is_file():
            log.info("Resuming from %s", self.path)
            return str(self.path)
        return None

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.segment_start

    # Signals ------------------------------------------------------------------------------------
    def setup(self, trainer, module, stage) -> None:
        # The handlers in place before Lightning registers its own (e.g. submitit's): chained to after a save.
        self.outer_handlers = {s: signal.getsignal(s) for s in SIGNALS}

    def on_train_start(self, trainer, module) -> None:
        self.segment_start = time.perf_counter()
        self.saved_at = trainer.global_step
        if self.on_signal and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:  # after Lightning's registration, so these win while training
                signal.signal(signum, self.note_signal)

    def note_signal(self, signum: int, frame) -> None:
        log.warning("Received %s: checkpointing after the current step.", signal.Signals(signum).name)
        self.received = signum

    def teardown(self, trainer, module, stage) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self.outer_handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)

    # Saving -------------------------------------------------------------------------------------
    def due(self, trainer) -> bool:
        """Whether a checkpoint is due now: a signal arrived, or ``every_n_steps`` steps passed since the last."""
        steps = trainer.global_step  # steps done
        periodic = self.every_n_steps and steps - self.saved_at >= self.every_n_steps and steps < trainer.max_steps
        return self.received is not None or bool(periodic)

    def on_step_end(self, trainer, module, step: int) -> None:
        if self.due(trainer):
            module.end_batch()  # a Lightning batch may hold several steps: the save follows at its end, now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self.due(trainer):
            return
        signalled, self.received = self.received, None
        if signalled is not None:
            self.interrupted = signalled
            module.flush()  # the pending records, while logging is still allowed (not in on_train_end)
        self.save(trainer)
        trainer.should_stop = trainer.should_stop or signalled is not None

    def save(self, trainer) -> None:
        self.saved_at = trainer.global_step
        self.dirpath.mkdir(parents=True, exist_ok=True)
        partial = self.dirpath / f".{CHECKPOINT_NAME}.partial"
        trainer.save_checkpoint(partial)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, self.path)
        log.info("Checkpoint at step %d: %s", trainer.global_step, self.path)

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed_before = state_dict["elapsed_s"]

    # After the run ------------------------------------------------------------------------------
    def exit_after_signal(self) -> None:
        """Requeue (SIGUSR1/SIGUSR2 inside SLURM) and end the process; called once the fit has returned."""
        signum = self.interrupted
        name = signal.Signals(signum).name
        log.warning("Stopped on %s; checkpoint %s. Run again in the same directory to resume.", name, self.path)
        if signum != signal.SIGTERM:
            outer = self.outer_handlers.get(signum)
            job = slurm_job_id()
            if callable(outer):
                outer(signum, None)  # e.g. submitit: re-pickles the submission, requeues, exits
            elif self.requeue and job:
                result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
                if result.returncode == 0:
                    log.info("Requeued SLURM job %s", job)
                else:
                    log.error("Could not requeue SLURM job %s: %s", job, result.stderr.strip())
        raise RunInterrupted(128 + signum)

    def finish(self) -> None:
        """The run's outputs are written: its checkpoint is no longer needed."""
        if not self.keep:
            self.path.unlink(missing_ok=True)

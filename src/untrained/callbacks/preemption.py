"""Signals from process start to exit: what a SLURM job does when SIGTERM, SIGUSR1 or SIGUSR2 arrives.

:data:`LATCH` notes those signals from the moment ``train.py`` starts a job (``LATCH.install()``), while libraries,
data, coil maps and W&B are still loading; the fit's own callback (``checkpoint.StopOnSignal``)
takes over while training and hands any signal that came earlier to the fit, which then stops after one step with a
checkpoint. :func:`leave` ends an interrupted job the same way whenever it happens:

- SIGUSR1/SIGUSR2 (SLURM's warning before the time limit): requeue, through the handler that was there before
  (submitit's re-pickles its submission, requeues, exits) or with ``scontrol requeue``;
- SIGTERM: SLURM's own kill (``scancel``, ``scontrol requeue``, preemption, the time limit) leaves the job
  COMPLETING, and SLURM requeues or ends it as it decided; a SIGTERM from outside SLURM's job control (``kill``,
  ``scancel --signal=TERM``, a node's shutdown script) leaves it RUNNING: the job requeues itself;
- then the process exits with 128 + the signal by raising :class:`RunInterrupted`, a ``SystemExit``, so that neither
  Hydra's job runner nor submitit records a failed result (the launcher waits for the requeued attempt instead).

A process that dies before ``LATCH.install()`` (a signal during the first imports) is requeued by the batch
script's guard (``slurm/requeue_guard.sh``), which the sweep launcher's ``setup`` sources.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

log = logging.getLogger(__name__)

SLURM_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


class RunInterrupted(SystemExit):
    """The run stopped on a signal (after writing its checkpoint, if it had started); exit code 128 + signal.

    A ``SystemExit`` on purpose: Hydra's job runner and submitit record ordinary exceptions as a finished,
    failed job, whereas an interrupted run must simply end so that its requeued job resumes.
    """


def slurm_job_id() -> str | None:
    """This job's id as ``scontrol`` takes it (``<array job>_<task>`` for an array task), or None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


def slurm_job_state(job: str) -> str | None:
    """The job's ``JobState`` (RUNNING, COMPLETING...) as slurmctld has it now, or None if it cannot be asked."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for field in shown.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def requeue_slurm_job(job: str) -> bool:
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("Could not requeue SLURM job %s: %s", job, error)
        return False
    if result.returncode != 0:
        log.error("Could not requeue SLURM job %s: %s", job, result.stderr.strip())
        return False
    log.info("Requeued SLURM job %s", job)
    return True


class SignalLatch:
    """Notes SIGTERM/SIGUSR1/SIGUSR2 for a whole job; the signal is acted on at the job's next safe point."""

    def __init__(self):
        self.received: int | None = None
        self.outer_handlers: dict[int, object] = {}  # those found at install (e.g. submitit's), used by leave()
        self.installed = False

    def install(self) -> None:
        """Start noting the signals (again: a new job of a multirun starts with none received)."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SLURM_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not self.note:
                self.outer_handlers[signum] = handler
            signal.signal(signum, self.note)
        self.installed = True

    def note(self, signum: int, frame=None) -> None:
        if self.received is None:
            log.warning("Received %s: the run stops at its next safe point.", signal.Signals(signum).name)
            self.received = signum

    def outer_handler(self, signum: int):
        return self.outer_handlers.get(signum) if self.installed else None


LATCH = SignalLatch()


def leave(signum: int, requeue: bool = True, outer_handler=None) -> None:
    """Requeue the SLURM job as the signal asks (module docstring) and end the process with 128 + signum."""
    job = slurm_job_id()
    outer = outer_handler
    if not callable(outer) or outer == LATCH.note:  # the latch only notes: the handler it found acts
        outer = LATCH.outer_handler(signum)
    if signum in (signal.SIGUSR1, signal.SIGUSR2):
        if callable(outer):
            try:
                outer(signum, None)  # e.g. submitit: re-pickles the submission, requeues, exits
            except Exception as error:
                # SLURM's kill for the requeue may reach the `scontrol requeue` child before it returns (submitit
                # then raises); a requeue that did not happen is left to the batch script's guard.
                log.warning("The requeue handler raised %s: %s", type(error).__name__, error)
        elif requeue and job:
            requeue_slurm_job(job)
    elif signum == signal.SIGTERM and requeue and job:
        state = slurm_job_state(job)
        if state == "RUNNING":  # not SLURM's own kill: nobody else will requeue this job
            requeue_slurm_job(job)
        else:
            log.info("SLURM is ending job %s (%s): it requeues or ends it.", job, state)
    raise RunInterrupted(128 + signum)

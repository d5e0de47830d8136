"""Interruptible, preemption-safe runs: a checkpoint on Ctrl-C and SLURM's signals, periodic checkpoints, resume.

SLURM warns a job before killing it: ``--signal`` (submitit: SIGUSR2, Lightning: SIGUSR1) before the time
limit, SIGTERM on preemption, ``scontrol requeue`` and ``scancel``; outside SLURM, SIGTERM comes from ``kill`` or a
shutdown and SIGINT from Ctrl-C. While training, these callbacks turn all of them into "finish the current step,
stop": the handlers only note the signal, so the run stops between two steps (:class:`PreemptionCheckpoint`
writes ``<dirpath>/last.ckpt`` there), and ``train()`` writes the run's outputs (``status: interrupted``). Then
:meth:`StopOnSignal.exit_after_signal` requeues the job for SIGUSR1/SIGUSR2 (through the handler that was there
before training, e.g. submitit's, which also re-pickles its submission; otherwise with ``scontrol requeue``),
leaves SIGTERM to SLURM when SLURM sent it (it requeues a preempted or requeued job itself, and a cancelled job must
stay cancelled) and requeues the job on a SIGTERM from outside (``callbacks/preemption.py``, which also covers the
signals that arrive before and after the fit), and exits with 128 + the signal. A second Ctrl-C stops the process
at once, without saving.
When the run starts again in the same run directory, ``train()`` resumes from ``last.ckpt``.

A checkpoint holds what Lightning saves (network, optimizer, all buffers of the module and the method:
z, averages, masks, the best iterate; loop progress and step; every callback's ``state_dict``) plus the
module's host-side history and the RNG streams (:func:`untrained.rng.rng_states`), so that a resumed CPU run ends
bit-for-bit like an uninterrupted one. Writes go to a temporary file that is renamed over the last
checkpoint, so a crash while writing never leaves a corrupt one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from untrained.callbacks.base import StepCallback
from untrained.callbacks.preemption import LATCH, SLURM_SIGNALS, RunInterrupted, leave, slurm_job_id

log = logging.getLogger(__name__)

SIGNALS = SLURM_SIGNALS + (signal.SIGINT,)
__all__ = ["RunInterrupted", "slurm_job_id", "StopOnSignal", "PreemptionCheckpoint", "CHECKPOINT_NAME"]
CHECKPOINT_NAME = "last.ckpt"


class StopOnSignal(StepCallback):
    """Turns Ctrl-C (SIGINT) and SIGUSR1/SIGUSR2/SIGTERM during a fit into "stop after the current step".

    After the fit, ``train()`` writes the run's outputs and calls :meth:`exit_after_signal`. Runs use
    :class:`PreemptionCheckpoint`, which also saves; this class alone (``checkpoint: null``) stops without saving.

    Args:
        on_signal: catch the signals while fitting (otherwise they act as they would without this callback).
        requeue: on SIGUSR1/SIGUSR2 inside a SLURM job, requeue it (submitit's own handler is used where present).
    """

    def __init__(self, on_signal: bool = True, requeue: bool = True):
        self.on_signal, self.requeue = on_signal, requeue
        self.received: int | None = None  # the signal noted by the handler, acted on after the current step
        self.interrupted: int | None = None  # the signal the run stopped on
        self.outer_handlers: dict[int, object] = {}

    @property
    def interrupted_by(self) -> str | None:
        """The name of the signal the run stopped on (``"SIGINT"``...), or None."""
        return None if self.interrupted is None else signal.Signals(self.interrupted).name

    # Signals ------------------------------------------------------------------------------------
    def catch(self, signals) -> None:
        if self.on_signal and threading.current_thread() is threading.main_thread():
            for signum in signals:
                signal.signal(signum, self.note_signal)

    def setup(self, trainer, module, stage) -> None:
        # The handlers in place before Lightning registers its own (e.g. submitit's): chained to after a save.
        self.outer_handlers = {s: signal.getsignal(s) for s in SIGNALS}
        # Ctrl-C from the start of the fit: Lightning would end the process with exit(1), writing nothing.
        # Lightning's own handlers (registered just before training) leave SIGINT alone.
        self.catch([signal.SIGINT])

    def on_train_start(self, trainer, module) -> None:
        self.catch(SLURM_SIGNALS)  # after Lightning's registration, so these win while training
        if LATCH.received is not None and self.received is None:
            self.received = LATCH.received  # arrived while the fit was starting: stop (and save) after one step

    def note_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C stops the process at once
            log.warning("Ctrl-C: saving the run after the current step (Ctrl-C again stops at once, without saving).")
        else:
            log.warning("Received %s: saving the run after the current step.", signal.Signals(signum).name)
        if self.received is None:
            self.received = signum
        if LATCH.installed:  # a train.py job: an error raised later in it is then the signal's doing
            LATCH.received = LATCH.received or signum

    def restore_handlers(self) -> None:
        """Give back the handlers found at setup. Also called by ``train()`` once the fit has returned or raised:
        a fit that raises skips the teardown hooks, and Lightning then puts back the handlers it found when
        training started, this callback's among them."""
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self.outer_handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)

    def teardown(self, trainer, module, stage) -> None:
        self.restore_handlers()

    # Stopping -----------------------------------------------------------------------------------
    def on_step_end(self, trainer, module, step: int) -> None:
        if self.received is not None:
            module.end_batch()  # a Lightning batch may hold several steps: stop after this one

    def take_signal(self, module) -> bool:
        """Whether a signal arrived; if so the run stops on it, with its pending records flushed (here, while
        logging is still allowed, not in on_train_end)."""
        if self.received is None:
            return False
        self.interrupted, self.received = self.received, None
        try:
            module.flush()
        except Exception as error:  # SLURM signals W&B's service process too: the checkpoint must still be written
            log.warning("Could not flush the records to the logger after %s: %s", self.interrupted_by, error)
        return True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.take_signal(module):
            trainer.should_stop = True

    # After the run ------------------------------------------------------------------------------
    def exit_after_signal(self) -> None:
        """Requeue (SIGUSR1/SIGUSR2, or a SIGTERM from outside SLURM) and end the process; called once the outputs
        are written (``untrained.callbacks.preemption.leave``)."""
        if self.interrupted == signal.SIGINT:
            raise RunInterrupted(128 + signal.SIGINT)
        leave(self.interrupted, self.requeue, self.outer_handlers.get(self.interrupted))


class PreemptionCheckpoint(StopOnSignal):
    """Checkpoints every ``every_n_steps`` steps (0 = never) and on SIGINT/SIGUSR1/SIGUSR2/SIGTERM; resumes from them.

    Args:
        dirpath: where ``last.ckpt`` lives (the run directory's ``checkpoints/``).
        every_n_steps: periodic checkpoints (0: only on signals).
        on_signal: catch Ctrl-C and SLURM's signals while fitting (otherwise they act as they would without this
            callback).
        resume: start from ``last.ckpt`` when it exists (an interrupted or requeued run, a crashed run started again).
        requeue: on SIGUSR1/SIGUSR2 inside a SLURM job, requeue it (submitit's own handler is used where present).
        keep: keep ``last.ckpt`` after the run has finished (otherwise it is deleted once the outputs are written).
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int = 0,
        on_signal: bool = True,
        resume: bool = True,
        requeue: bool = True,
        keep: bool = False,
    ):
        if every_n_steps < 0:
            raise ValueError("checkpoint.every_n_steps must be >= 0 (0 = no periodic checkpoints).")
        super().__init__(on_signal, requeue)
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self.resume, self.keep = resume, keep
        self.elapsed_before = 0.0  # training seconds of the earlier segments of a resumed run
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

    def on_train_start(self, trainer, module) -> None:
        self.segment_start = time.perf_counter()
        self.saved_at = trainer.global_step
        super().on_train_start(trainer, module)

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
        signalled = self.take_signal(module)
        self.save(trainer)
        trainer.should_stop = trainer.should_stop or signalled

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
    def finish(self) -> None:
        """The run's outputs are written: its checkpoint is no longer needed."""
        if not self.keep:
            self.path.unlink(missing_ok=True)

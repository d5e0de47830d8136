"""``train(cfg)``: assemble the run a Hydra config describes (``run.py``), fit it, and write its outputs."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from untrained.callbacks.holdout import TARGET as HOLDOUT_TARGET
from untrained.callbacks.holdout import holdout_split
from untrained.callbacks.preemption import LATCH, leave
from untrained.errors import UserError
from untrained.outputs import replacing, write_metrics, write_results
from untrained.run import assemble, check_config, fit
from untrained.speed.memory import reuse_freed_memory

log = logging.getLogger(__name__)


def close_experiment(logger, exit_code: int = 0) -> None:
    """End a W&B run (a non-zero exit code marks it failed there) so the next run of a multirun in this process
    starts its own."""
    finish = getattr(getattr(logger, "experiment", None), "finish", None)
    if callable(finish):
        finish(exit_code=exit_code)


def exit_code(status: str, signum: int | None) -> int:
    """The process's exit code for a run's status: 0, 1 (failed), or 128 + the signal that interrupted it."""
    return 128 + signum if status == "interrupted" else 0 if status == "completed" else 1


def resume_command() -> str | None:
    """The command that runs this Hydra job again in its own directory, where it resumes from ``last.ckpt``:
    its command-line overrides plus ``hydra.run.dir`` (None outside a Hydra job, e.g. ``train(cfg)`` in tests)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    run_dir = str(hydra_cfg.runtime.output_dir)
    if not re.fullmatch(r"[\w/.:~+-]+", run_dir, flags=re.ASCII):  # characters Hydra's grammar reads as they are
        run_dir = "'" + run_dir.replace("'", "\\'") + "'"
    return shlex.join(["python", "train.py", *hydra_cfg.overrides.task, f"hydra.run.dir={run_dir}"])


def is_wandb(logger_cfg: DictConfig | None) -> bool:
    return logger_cfg is not None and str(logger_cfg.get("_target_", "")).endswith("WandbLogger")


def check_wandb_reachable(logger_cfg: DictConfig | None) -> None:
    """W&B online mode with no route to its server would stall a job in ``wandb.init``: fail in seconds instead."""
    offline_modes = ("offline", "disabled", "dryrun")
    if not is_wandb(logger_cfg) or logger_cfg.get("offline") or os.environ.get("WANDB_MODE") in offline_modes:
        return
    from urllib.parse import urlparse

    import wandb

    os.environ.setdefault("WANDB_INIT_TIMEOUT", "60")  # a reachable but unresponsive server: give up after a minute
    url = urlparse(wandb.Settings().base_url)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as error:
        raise UserError(
            f"W&B is online (logger.offline=false) but {url.hostname} is unreachable ({error}): use "
            "logger.offline=true and sync later with `wandb sync`, or logger=none."
        ) from None


def continue_wandb_run(cfg: DictConfig, output_dir: Path) -> None:
    """One W&B run per run directory: the id is drawn at the first attempt and kept in ``<output_dir>/.wandb_id``,
    so that a resumed or requeued attempt continues the same run (``resume="allow"``) instead of opening another."""
    logger_cfg = cfg.get("logger")
    if not is_wandb(logger_cfg) or logger_cfg.get("id"):
        return
    id_file = output_dir / ".wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        run_id = secrets.token_hex(4)
        with replacing(id_file) as partial:
            partial.write_text(run_id + "\n")
    with open_dict(logger_cfg):
        logger_cfg.id = run_id
        logger_cfg.resume = logger_cfg.get("resume") or "allow"


# W&B names each attempt's folder (offline-)run-<date>_<time>-<id>, adding -<n> when two start in the same second.
WANDB_RUN_FOLDER = re.compile(r"(?:offline-)?run-\d{8}_\d{6}-([^-]+)(?:-\d+)?")


def wandb_run_ids(output_dir: Path) -> set[str]:
    """The W&B run ids logged under a run directory: one, however many attempts, when attempts continue a run."""
    folders = (output_dir / "wandb").glob("*run-*")
    return {match.group(1) for folder in folders if (match := WANDB_RUN_FOLDER.fullmatch(folder.name))}


def config_digest(cfg: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()


def completed_earlier(digest: str, output_dir: Path) -> dict | None:
    """The metrics of this run (``digest``: of its config) when an earlier attempt of this SLURM job already completed
    it (a job requeued while writing its outputs, or after): the requeued attempt hands them back instead of fitting
    again."""
    if not int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0):
        return None
    marker, metrics_file = output_dir / ".completed", output_dir / "metrics.json"
    if not (marker.is_file() and metrics_file.is_file()) or marker.read_text().strip() != digest:
        return None
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("status") != "completed":
        return None
    log.info("This run completed in an earlier attempt of the job: outputs in %s", output_dir)
    return metrics


def stop_if_signalled() -> None:
    """A signal that arrived while the run was starting: no step taken, nothing to save; requeue and exit."""
    if LATCH.received is not None:
        leave(LATCH.received)


def quietly(what: str, call, *args, **kwargs) -> None:
    """A logger call after a signal: SLURM signals W&B's service process too, and a dead logger must not turn an
    interrupted run into a failed one."""
    try:
        call(*args, **kwargs)
    except Exception as error:
        log.warning("Could not %s after %s: %s", what, LATCH.received or "the signal", error)


def refit_holdout(cfg: DictConfig, metrics: dict, output_dir: Path) -> dict:
    """With ``refit: true`` on the held-out rule: fit again on ALL measurements, from the same seed, to the step the
    rule chose (``<run>/refit/``, its own checkpoints: preemption-safe like any run); that fit's reconstruction
    becomes the run's (files and metrics.json). Returns the run's metrics."""
    split = holdout_split(cfg)
    if split is None or not split["refit"] or metrics.get("holdout_step") is None:
        return metrics
    if "holdout_refit_step" in metrics:  # done in an earlier attempt
        return metrics
    refit_dir = output_dir / "refit"
    refit_cfg = copy.deepcopy(cfg)
    with open_dict(refit_cfg):
        refit_cfg.callbacks = {
            k: v for k, v in cfg.callbacks.items() if v is None or v.get("_target_") != HOLDOUT_TARGET
        }
        refit_cfg.trainer.max_steps = int(metrics["holdout_step"]) + 1
        refit_cfg.paths.output_dir = str(refit_dir)
        if refit_cfg.get("checkpoint") is not None:
            refit_cfg.checkpoint.dirpath = str(refit_dir / "checkpoints")
        refit_cfg.logger = None  # one logged run per run directory: the refit's numbers go to metrics.json
    log.info("Refit on all measurements for %d steps: %s", refit_cfg.trainer.max_steps, refit_dir)
    refit = train(refit_cfg)
    if refit.get("status") != "completed":
        return metrics
    for source in refit_dir.glob("reconstruction*"):
        if source.is_file():
            with replacing(output_dir / source.name) as partial:  # atomic, as every output
                shutil.copyfile(source, partial)
    metrics = {
        **metrics,
        "reconstruction": "holdout_refit",
        "holdout_refit_step": int(metrics["holdout_step"]),
        "holdout_refit_residual": refit.get("reconstruction_residual"),
    }
    for key in ("psnr", "ssim"):
        if f"final_{key}" in refit:
            metrics[f"holdout_refit_{key}"] = refit[f"final_{key}"]
    if "holdout_refit_psnr" in metrics:
        metrics["reconstruction_psnr"] = metrics["holdout_refit_psnr"]
    write_metrics(metrics, output_dir)
    return metrics


def train(cfg: DictConfig) -> dict:
    """Fit the measurement(s) ``cfg`` describes; return the metrics written to ``metrics.json``."""
    check_config(cfg)
    if (cfg.get("performance") or {}).get("reuse_freed_memory", True):
        reuse_freed_memory()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    digest = config_digest(cfg)
    if (earlier := completed_earlier(digest, output_dir)) is not None:
        return refit_holdout(cfg, earlier, output_dir)  # a requeue during the refit goes on with it
    check_wandb_reachable(cfg.get("logger"))
    continue_wandb_run(cfg, output_dir)
    run = assemble(cfg)
    stop_if_signalled()
    if run.logger:
        run.logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    stop_if_signalled()

    outcome = fit(run)
    metrics = write_results(run, outcome)
    if not outcome.interrupted_by and not outcome.crash and metrics["status"] == "completed":
        with replacing(output_dir / ".completed") as partial:
            partial.write_text(digest + "\n")
    if run.checkpoint and not outcome.interrupted_by:
        run.checkpoint.finish()
    if metrics["status"] == "completed" and not outcome.crash and not outcome.interrupted_by and not run.batched:
        metrics = refit_holdout(cfg, metrics, output_dir)
    if run.logger:
        signalled = outcome.interrupted_by or LATCH.received is not None
        log_summary = quietly if signalled else (lambda what, call, *a, **k: call(*a, **k))
        row = {f"summary/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        log_summary("log the summary", run.logger.log_metrics, row, step=metrics["steps"])
        log_summary(
            "finalize the logger", run.logger.finalize, "success" if metrics["status"] == "completed" else "failed"
        )
        code = exit_code(metrics["status"], run.signals and run.signals.interrupted)
        log_summary("close the logger", close_experiment, run.logger, code)
    if outcome.crash is not None:
        raise outcome.crash
    if outcome.interrupted_by:
        log_interruption(run, metrics, output_dir)
        run.signals.exit_after_signal()
    if LATCH.received is not None:
        log.info("The run had completed when the signal arrived: nothing to resume.")
    if metrics["status"] == "failed":
        log.error("Run failed: %s. What it had is kept in %s", metrics.get("failure"), output_dir)
    else:
        summary = ", ".join(f"{k}={metrics[k]:.2f}" for k in ("best_psnr", "final_psnr") if k in metrics)
        members = f"{len(run.members)} members x " if run.batched else ""
        log.info(
            "Finished %s%d steps in %.1f s%s. Outputs: %s",
            members,
            metrics["steps"],
            outcome.wall_time_s,
            f" ({summary})" if summary else "",
            output_dir,
        )
    return metrics


def log_interruption(run, metrics: dict, output_dir: Path) -> None:
    """Where the interrupted run's outputs are, and how to go on."""
    where = f"outputs in {output_dir}"
    if run.checkpoint:
        where += f", checkpoint {run.checkpoint.path}"
    else:
        where += " (checkpoint: null: started again, the fit starts over)"
    log.warning(
        "Interrupted by %s at step %d of %d: %s",
        run.signals.interrupted_by,
        metrics["steps"],
        run.trainer.max_steps,
        where,
    )
    if run.checkpoint:
        command = resume_command()
        log.warning("Resume with: %s", command) if command else log.warning("Run again in %s to resume.", output_dir)

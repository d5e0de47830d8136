"""``train(cfg)``: assemble the run a Hydra config describes (``run.py``), fit it, and write its outputs."""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from untrained.errors import UserError
from untrained.outputs import write_results
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


def check_wandb_reachable(logger_cfg: DictConfig | None) -> None:
    """W&B online mode with no route to its server would stall a job in ``wandb.init``: fail in seconds instead."""
    offline_modes = ("offline", "disabled", "dryrun")
    if (
        logger_cfg is None
        or not str(logger_cfg.get("_target_", "")).endswith("WandbLogger")
        or logger_cfg.get("offline")
        or os.environ.get("WANDB_MODE") in offline_modes
    ):
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


def train(cfg: DictConfig) -> dict:
    """Fit the measurement(s) ``cfg`` describes; return the metrics written to ``metrics.json``."""
    check_config(cfg)
    if (cfg.get("performance") or {}).get("reuse_freed_memory", True):
        reuse_freed_memory()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_wandb_reachable(cfg.get("logger"))
    run = assemble(cfg)
    if run.logger:
        run.logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    outcome = fit(run)
    metrics = write_results(run, outcome)
    if run.checkpoint and not outcome.interrupted_by:
        run.checkpoint.finish()
    if run.logger:
        run.logger.log_metrics(
            {f"summary/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=metrics["steps"]
        )
        run.logger.finalize("success" if metrics["status"] == "completed" else "failed")
        close_experiment(run.logger, exit_code(metrics["status"], run.signals and run.signals.interrupted))
    if outcome.crash is not None:
        raise outcome.crash
    if outcome.interrupted_by:
        log_interruption(run, metrics, output_dir)
        run.signals.exit_after_signal()
    if metrics["status"] == "failed":
        log.error("Run failed: %s. Best iterate kept in %s", metrics.get("failure"), output_dir)
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
        where += " (batched fits are not checkpointed: started again, the fit starts over)"
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

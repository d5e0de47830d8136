"""``train(cfg)``: build task × network × method from a Hydra config, fit, and write the run's outputs."""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import socket
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf

from untrained.callbacks.base import ReportingCallback
from untrained.errors import UserError, check_integer, check_options
from untrained.fast import performance_callbacks, performance_from_config, reuse_freed_memory
from untrained.module import UntrainedModule
from untrained.outputs import write_run_outputs

log = logging.getLogger(__name__)


def build(config: DictConfig | None, group: str, **kwargs):
    """Instantiate one config node; errors a user caused surface as :class:`UserError`.

    Task and method configs carry a ``name`` label (for logging and reports) that is not an argument.
    """
    if config is None:
        return None
    node = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    if isinstance(node, dict) and group in ("task", "method"):
        node.pop("name", None)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise UserError(
                f"Invalid {group} option: {cause}. Check the keys under '{group}' in your overrides."
            ) from None
        raise


def check_network_fits(network, image_shape: tuple[int, ...]) -> None:
    """The network's dimension, and the image size for networks that do not pad to their factor (an
    ``ImageNetwork`` takes any size above a minimum: ``UntrainedModule`` calls its ``fit_to``, which checks it)."""
    factor = getattr(network, "downsampling_factor", 1)
    spatial = image_shape[1:]
    dim = getattr(network, "dim", len(spatial))
    if dim != len(spatial):
        raise UserError(
            f"The network is {dim}D but the task's signals are {len(spatial)}D ({'x'.join(map(str, spatial))}): "
            f"use a {len(spatial)}D network, e.g. network=skip network.dim={len(spatial)}."
        )
    if hasattr(network, "fit_to"):
        return
    if any(n < factor for n in spatial):
        raise UserError(
            f"The image ({'x'.join(map(str, spatial))}) is smaller than the network's downsampling factor {factor}: "
            f"use a larger task.size or fewer network scales."
        )
    if any(n % factor for n in spatial):
        raise UserError(
            f"The image size {'x'.join(map(str, spatial))} is not divisible by the network's downsampling factor "
            f"{factor}: set task.size to a multiple of {factor} or use fewer network scales."
        )
    if getattr(network, "normalises_coarsest_scale", False) and math.prod(n // factor for n in spatial) < 2:
        raise UserError(
            f"The image ({'x'.join(map(str, spatial))}) leaves one pixel at the network's coarsest scale (downsampling "
            f"factor {factor}), where BatchNorm has nothing to normalise: use task.size >= {2 * factor} or fewer "
            f"network scales."
        )


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


def device_name(trainer: L.Trainer) -> str:
    """The device the fit ran on (Lightning moves the module back to the CPU when the fit ends)."""
    device = trainer.strategy.root_device
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def run_report(cfg: DictConfig, module, trainer: L.Trainer, wall_time: float, callbacks) -> tuple[dict, dict]:
    """A fitted module's metrics.json entries and images: its summary, the run's settings and what its
    reporting callbacks add."""
    steps = int(trainer.global_step)
    metrics = module.summary()
    metrics.update(
        steps=steps,
        task=cfg.task.get("name"),
        method=cfg.method.get("name"),
        seed=int(cfg.seed),
        wall_time_s=wall_time,
        seconds_per_step=wall_time / max(steps, 1),
        device=device_name(trainer),
        task_info=module.problem.info,  # what a re-analysis needs: noise level, mask, data scale, views...
    )
    images = {}
    for callback in callbacks:
        if isinstance(callback, ReportingCallback):
            metrics.update(callback.report(module))
            images.update(callback.images(module))
    return metrics, images


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


# The config entries whose numbers ``check_config`` guards (hydra, paths and logger hold strings).
CHECKED_ENTRIES = ("seed", "task", "network", "method", "module", "trainer", "performance", "callbacks", "checkpoint")


def check_config(cfg: DictConfig) -> None:
    """No NaN/Inf option, whole seeds, a positive step count: before anything is built or allocated."""
    plain = {
        key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        for key in CHECKED_ENTRIES
        if (value := cfg.get(key)) is not None
    }
    check_options(plain)
    if "max_steps" in (cfg.get("trainer") or {}):
        check_integer("trainer.max_steps", cfg.trainer.max_steps, 1)


def build_module(cfg: DictConfig) -> UntrainedModule:
    """Task, method and network from the config, seeded, ready for the trainer."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    problem = build(cfg.task, "task")
    method = build(cfg.method, "method")
    network = build(
        cfg.network, "network", in_channels=method.input_channels(problem), out_channels=problem.image_shape[0]
    )
    check_network_fits(network, problem.image_shape)
    return UntrainedModule(problem, network, method, **cfg.module)


def train(cfg: DictConfig) -> dict:
    """Fit one measurement; return the metrics written to ``metrics.json``."""
    check_config(cfg)
    if performance_from_config(cfg).reuse_freed_memory:
        reuse_freed_memory()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_wandb_reachable(cfg.get("logger"))
    from untrained.batched import batch_size, train_batched

    if batch_size(cfg) > 1:
        return train_batched(cfg)
    module = build_module(cfg)
    callbacks = [build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += performance_callbacks(cfg)
    # Last, so that a checkpoint taken after a step holds the other callbacks' state of that step.
    checkpointing = build(cfg.get("checkpoint"), "checkpoint")
    callbacks += [checkpointing] if checkpointing else []
    logger = build(cfg.get("logger"), "logger") or False
    # Inside SLURM the checkpoint callback answers the signals; Lightning's auto-requeue would save another.
    plugins = {"plugins": [SLURMEnvironment(auto_requeue=False)]} if checkpointing and SLURMEnvironment.detect() else {}
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=logger, **plugins)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    start = time.perf_counter()
    crash = None
    try:
        trainer.fit(module, ckpt_path=checkpointing.resume_path() if checkpointing else None)
    except Exception as error:  # keep what the run has (best iterate, history), then report the error
        module.status, module.failure, crash = "failed", f"{type(error).__name__}: {error}", error
    finally:
        if checkpointing:
            checkpointing.restore_handlers()
    interrupted_by = checkpointing.interrupted_by if checkpointing else None
    if interrupted_by and module.status != "failed":
        module.status = "interrupted"  # after the fit: the checkpoint says "running", so a resumed run completes
    wall_time = time.perf_counter() - start + (checkpointing.elapsed_before if checkpointing else 0.0)

    metrics, images = run_report(cfg, module, trainer, wall_time, callbacks)
    if interrupted_by:
        metrics["interrupted_by"] = interrupted_by
    write_run_outputs(output_dir, module, metrics, images)
    if checkpointing and not interrupted_by:
        checkpointing.finish()
    if logger:
        logger.log_metrics(
            {f"summary/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=metrics["steps"]
        )
        logger.finalize("success" if metrics["status"] == "completed" else "failed")
        close_experiment(logger, exit_code(metrics["status"], checkpointing and checkpointing.interrupted))
    if crash is not None:
        raise crash
    if interrupted_by:
        log.warning(
            "Interrupted by %s at step %d of %d: outputs in %s, checkpoint %s",
            interrupted_by,
            metrics["steps"],
            trainer.max_steps,
            output_dir,
            checkpointing.path,
        )
        command = resume_command()
        log.warning("Resume with: %s", command) if command else log.warning("Run again in %s to resume.", output_dir)
        checkpointing.exit_after_signal()
    if metrics["status"] == "failed":
        log.error("Run failed: %s. Best iterate kept in %s", metrics.get("failure"), output_dir)
    else:
        summary = ", ".join(f"{k}={metrics[k]:.2f}" for k in ("best_psnr", "final_psnr") if k in metrics)
        log.info(
            "Finished %d steps in %.1f s%s. Outputs: %s",
            metrics["steps"],
            wall_time,
            f" ({summary})" if summary else "",
            output_dir,
        )
    return metrics

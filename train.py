"""Fit one measurement with an untrained network: ``python train.py task=... network=... method=...``."""

import logging
import os
import sys
from pathlib import Path


def stopped_by_ctrl_c(log: logging.Logger | None = None):
    """Ctrl-C before the fit has anything to save (libraries, data, W&B still loading): one line, exit 130.
    During the fit the checkpoint callback handles Ctrl-C (it saves the run, then exits with 130)."""
    if log:
        log.warning("Stopped by Ctrl-C.")
    else:
        print("Stopped by Ctrl-C.", file=sys.stderr)
    sys.exit(130)


try:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    from untrained.callbacks import preemption
    from untrained.callbacks.preemption import RunInterrupted, leave
    from untrained.errors import UserError
    from untrained.run import check_renamed, preferred_choices
    from untrained.train import train
except KeyboardInterrupt:
    stopped_by_ctrl_c()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # From here on SIGTERM/SIGUSR1/SIGUSR2 are noted and answered at the run's next safe point: a requeue, never a
    # failed job (src/untrained/callbacks/preemption.py). The latch is reached through its module: a sweep launcher
    # pickles this function by value, and with it a copy of any object it names directly.
    preemption.LATCH.install()
    if os.environ.get("SLURM_JOB_ID"):
        # sbatch exports the submitting shell's environment, and with it the address of that process's W&B service
        # (set by any earlier wandb.init there). A job connecting to it shares one service with every task and every
        # attempt: a requeued attempt is then refused its own run id ("run ID is in use"). Each job starts its own.
        os.environ.pop("WANDB_SERVICE", None)
    log = logging.getLogger("untrained")
    hydra_config = HydraConfig.get()
    overrides = list(hydra_config.overrides.task)
    preferred = preferred_choices(cfg, hydra_config.runtime.choices, overrides)
    if preferred:  # the method's reference network, the task's callbacks (conf/method_network/, conf/task_callbacks/)
        cfg = hydra.compose("train", overrides=[*overrides, *preferred])
        if hydra_config.output_subdir is not None:  # the run directory's record of the config is the one that runs
            OmegaConf.save(cfg, Path(hydra_config.runtime.output_dir, hydra_config.output_subdir, "config.yaml"))
    try:
        metrics = train(cfg)
    except RunInterrupted:
        raise
    except BaseException as error:
        if preemption.LATCH.received is not None:
            # SLURM signals every process of the job (W&B's service among them): what failed after the signal
            # failed because of it. The job is requeued (or left to SLURM), not reported as failed.
            log.warning("Stopped by the signal (%s: %s).", type(error).__name__, error)
            leave(preemption.LATCH.received)
        if isinstance(error, KeyboardInterrupt):
            stopped_by_ctrl_c(log)
        if isinstance(error, UserError):
            log.error("%s", error)
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                sys.exit(2)  # in a multirun Hydra marks this job failed and runs the sweep's other jobs
        raise
    # The returned value is what Hydra sweepers optimise.
    return metrics.get("best_psnr", metrics.get("final_loss"))


if __name__ == "__main__":
    try:
        check_renamed(sys.argv[1:])  # before Hydra, whose error for an unknown key names no replacement
    except UserError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:  # while Hydra composes the config
        stopped_by_ctrl_c()

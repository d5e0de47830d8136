"""Fit one measurement with an untrained network: ``python train.py task=... network=... method=...``."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from untrained.errors import UserError
from untrained.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except UserError as error:
        logging.getLogger("untrained").error("%s", error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed and runs the sweep's other jobs
        sys.exit(2)
    # The returned value is what Hydra sweepers optimise.
    return metrics.get("best_psnr", metrics.get("final_loss"))


if __name__ == "__main__":
    main()

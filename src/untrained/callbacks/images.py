"""Log the current estimate as an image to the experiment logger every N steps."""

from __future__ import annotations

import numpy as np

from untrained.callbacks.base import StepCallback
from untrained.outputs import to_numpy_image


class ImageLogger(StepCallback):
    def __init__(self, every_n_steps: int = 500):
        self.every_n_steps = every_n_steps

    def on_step_end(self, trainer, module, step: int) -> None:
        if self.every_n_steps <= 0 or (step + 1) % self.every_n_steps != 0 or not hasattr(trainer.logger, "log_image"):
            return
        problem = module.problem
        image = to_numpy_image(problem.display(module.estimate)) / problem.data_range
        if image.ndim == 2 and module.estimate.ndim == 3:
            return  # 1D signals have no image
        trainer.logger.log_image("estimate", [np.clip(image, 0, 1)], step=step)

"""Log the current estimate as an image to the experiment logger every N steps."""

from __future__ import annotations

import lightning as L
import numpy as np

from untrained.outputs import to_numpy_image


class ImageLogger(L.Callback):
    def __init__(self, every_n_steps: int = 500):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step  # already advanced by the optimizer step
        if self.every_n_steps <= 0 or step % self.every_n_steps != 0 or not hasattr(trainer.logger, "log_image"):
            return
        problem = module.problem
        image = to_numpy_image(problem.display(module.estimate)) / problem.data_range
        if image.ndim == 2 and module.estimate.ndim == 3:
            return  # 1D signals have no image
        trainer.logger.log_image("estimate", [np.clip(image, 0, 1)], step=step - 1)

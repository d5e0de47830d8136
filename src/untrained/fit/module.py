"""The LightningModule of one fit: an untrained network fitted to one measurement, one optimizer step per step.

Each Lightning batch runs ``steps_per_batch`` optimization steps through the module's :class:`StepRunner` (the
method's step on the fast path), then the method's ``after_step``; after each step every ``StepCallback`` sees it.
"""

from __future__ import annotations

import torch
from torch import nn

from untrained.callbacks.base import StepCallback
from untrained.errors import UserError
from untrained.fit.base import TrackedFit
from untrained.fit.loop import step_tools
from untrained.fit.tracker import Tracker
from untrained.methods.base import Method, StepOutput
from untrained.networks.base import ImageNetwork
from untrained.problem import InverseProblem
from untrained.speed.policy import Performance
from untrained.speed.runner import StepRunner


class UntrainedModule(TrackedFit):
    def __init__(
        self,
        problem: InverseProblem,
        network: nn.Module,
        method: Method,
        eval_every: int = 1,
        log_every: int = 25,
        steps_per_batch: int | str = "auto",
        performance: Performance | None = None,
    ):
        super().__init__(eval_every, log_every, performance)
        if steps_per_batch != "auto" and not (isinstance(steps_per_batch, int) and steps_per_batch >= 1):
            raise UserError(f"module.steps_per_batch must be auto or a positive integer, got {steps_per_batch!r}.")
        self.problem, self.network, self.method = problem, network, method
        self.steps_per_batch = steps_per_batch
        if isinstance(network, ImageNetwork):  # any image size: crop the network's output to the image
            network.fit_to(problem.image_shape)
        method.setup(problem, network)
        self.tracker = Tracker(1, problem.image_shape, problem.has_ground_truth)
        self.batch_ending = False  # a step callback asked to end the current Lightning batch (end_batch)

    # The tracker's member 0, as callbacks, outputs and tests read it ------------------------------
    @property
    def estimate(self) -> torch.Tensor:
        return self.tracker.estimate[0]

    @property
    def output(self) -> torch.Tensor:
        """The latest raw network output (``estimate`` is after the method's averaging, if any)."""
        return self.tracker.output[0]

    @property
    def best_image(self) -> torch.Tensor:
        return self.tracker.best_image[0]

    @property
    def best_psnr(self) -> torch.Tensor:
        return self.tracker.best_psnr[0]

    @property
    def best_step(self) -> torch.Tensor:
        return self.tracker.best_step[0]

    @property
    def history(self) -> dict[str, list]:
        return self.tracker.histories[0]

    @property
    def status(self) -> str:
        return self.tracker.status[0]

    @status.setter
    def status(self, value: str) -> None:
        self.tracker.status[0] = value

    @property
    def failure(self) -> str | None:
        return self.tracker.failures[0]

    @failure.setter
    def failure(self, value: str | None) -> None:
        self.tracker.failures[0] = value

    # Setup ----------------------------------------------------------------------------------------
    def batch_steps(self) -> int:
        """Optimization steps per Lightning batch. ``auto``: ``log_every``, which amortises Lightning's per-batch
        host work (docs/performance.md). Per-step callbacks (early stopping, images, the preemption checkpoint)
        still act after every step."""
        return self.log_every if self.steps_per_batch == "auto" else self.steps_per_batch

    def configure_optimizers(self):
        return self.method.configure_optimizer(self.network)

    def make_runner(self) -> StepRunner:
        return StepRunner.for_method(self.network, self.problem, self.method, self.device, self.performance)

    # Training -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        step_callbacks = [c for c in self.trainer.callbacks if isinstance(c, StepCallback)]
        optimizer, backward = step_tools(self)
        self.batch_ending = False
        for _ in range(min(self.batch_steps(), self.trainer.max_steps - self.global_step)):
            step = self.global_step
            self.optimization_step(step, optimizer, backward)
            for callback in step_callbacks:
                callback.on_step_end(self.trainer, self, step)
            if self.trainer.should_stop or self.batch_ending:
                break

    def end_batch(self) -> None:
        """End the current Lightning batch after this step (a step callback's request, e.g. to checkpoint)."""
        self.batch_ending = True

    def optimization_step(self, step: int, optimizer, backward) -> None:
        out: StepOutput = self.runner.step(step, optimizer, backward)
        estimate = self.method.after_step(self.network, self.problem, step, out)
        record = {"loss": out.loss.detach().reshape(1), **{k: v.detach().reshape(1) for k, v in out.logs.items()}}
        with torch.no_grad():
            psnr = self.problem.psnr(estimate).reshape(1) if self.evaluates(step) else None
        self.tracker.update(step, estimate[None], record, psnr, out.output.detach()[None])
        if self.due_for_flush(step):
            self.flush()

    # Results --------------------------------------------------------------------------------------
    @torch.no_grad()
    def summary(self) -> dict:
        """Final and best metrics, and the baselines', as plain Python numbers."""
        problem, estimate = self.problem, self.estimate
        result: dict = {"status": self.status, "steps": int(self.global_step)}
        if self.failure:
            result["failure"] = self.failure
        result["final_loss"] = float(problem.data_loss(estimate))
        for key, value in problem.extra_metrics(estimate).items():
            result[f"final_{key}"] = float(value)
        if problem.has_ground_truth:
            result.update(final_psnr=float(problem.psnr(estimate)), final_ssim=float(problem.ssim(estimate)))
            if int(self.best_step) >= 0:
                result.update(
                    best_psnr=float(self.best_psnr),
                    best_ssim=float(problem.ssim(self.best_image)),
                    best_step=int(self.best_step),
                )
                for key, value in problem.extra_metrics(self.best_image).items():
                    result[f"best_{key}"] = float(value)
            for name, image in problem.baselines().items():
                result[f"baseline_{name}_psnr"] = float(problem.psnr(image))
                result[f"baseline_{name}_ssim"] = float(problem.ssim(image))
                for key, value in problem.extra_metrics(image).items():
                    result[f"baseline_{name}_{key}"] = float(value)
        return result

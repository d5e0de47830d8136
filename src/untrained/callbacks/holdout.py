"""Stopping by held-out measurements: a seeded fraction of the measurement entries is kept out of the fit (the
problem's ``hold_out``, applied by ``run.build_module`` before the method sees the data), and the run stops where
the misfit on those entries, which the fit never saw, is lowest: past that step the network fits the noise of the
fitted entries, and the held-out misfit rises again (docs/holdout.md).

As in ``early_stopping.py`` the state lives on the device and is updated with ``torch.where``; the host reads it
every ``check_every`` steps; the state freezes when the rule fires, so checking late changes only the extra steps.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from untrained.callbacks.early_stopping import MinimumStopping
from untrained.errors import UserError, check_integer
from untrained.problem import check_holdout_options

TARGET = "untrained.callbacks.holdout.HeldOutStopping"


def holdout_split(cfg: DictConfig) -> dict | None:
    """The split (fraction, seed, pattern) a run's held-out callback asks for; None without one."""
    for node in (cfg.get("callbacks") or {}).values():
        if isinstance(node, DictConfig) and node.get("_target_") == TARGET:
            options = OmegaConf.to_container(node, resolve=True)
            split = {key: options.get(key, default) for key, default in SPLIT_DEFAULTS.items()}
            check_holdout_options(split["fraction"], split["pattern"])
            return {**split, "refit": bool(options.get("refit", False))}
    return None


SPLIT_DEFAULTS = {"fraction": 0.1, "seed": 0, "pattern": "random"}


class HeldOutStopping(MinimumStopping):
    """Stop where the misfit on the held-out measurements is lowest, and hand over the iterate of that step.

    Args:
        fraction: the share of the task's holdable measurement entries held out, in (0, 0.5] (``pattern=cells``
            holds out one pixel in four and ignores it).
        seed: the split's seed (the same split for every member of a batched fit, and for ``seed`` + b alike).
        pattern: ``random`` (seeded entries) or ``cells`` (one pixel of each 2×2 cell; denoising).
        patience: steps without a new minimum of the (smoothed) held-out misfit before the rule fires.
        smoothing: β of an exponential average s ← β s + (1 − β) r of the held-out misfit r, on which the minimum
            is taken (0: the raw misfit).
        every: evaluate the held-out misfit every N steps (one forward operator application each).
        check_every: host synchronisations: every N steps (and at the end).
        stop_training: stop the run when the rule fires (false: only report what it chose).
        refit: after the run, fit again on all measurements for the chosen number of steps (``<run>/refit/``);
            that fit's image becomes the run's reconstruction.
        watch: ``estimate`` (the method's reported image, after its averaging) or ``output`` (the raw output).
        prefix: the metrics.json keys and image name.
    """

    WATCHED = ("estimate", "output")
    statistic = "residual"
    minimum_key = "best_smoothed"  # the minimum is taken on the (smoothed) misfit
    reported_key = "best_residual"  # the raw held-out misfit at the chosen step

    def __init__(
        self,
        fraction: float = SPLIT_DEFAULTS["fraction"],
        seed: int = SPLIT_DEFAULTS["seed"],
        pattern: str = SPLIT_DEFAULTS["pattern"],
        patience: int = 500,
        smoothing: float = 0.0,
        every: int = 1,
        check_every: int = 25,
        stop_training: bool = True,
        refit: bool = False,
        watch: str = "estimate",
        prefix: str = "holdout",
    ):
        check_holdout_options(fraction, pattern)
        check_integer("callbacks.early_stopping.every", every, 1)
        if not 0 <= smoothing < 1:
            raise UserError(f"callbacks.early_stopping.smoothing must be in [0, 1), got {smoothing}.")
        super().__init__(patience, stop_training, check_every, prefix, watch)
        self.fraction, self.seed, self.pattern = fraction, seed, pattern
        self.smoothing, self.every, self.refit = smoothing, every, refit

    # Tracking --------------------------------------------------------------------------------
    def new_state(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        nan = torch.tensor(math.nan, dtype=torch.float64, device=image.device)
        return {**super().new_state(image), "smoothed": nan, "best_residual": nan.clone()}

    @torch.no_grad()
    def observe(self, module, step: int) -> None:
        """One held-out misfit, state updated on the device, no host synchronisation."""
        image = getattr(module, self.watch).detach()
        if not self.state:
            self.pending = []
            self.state = self.new_state(image)
        problem = module.problem
        if problem.holdout is None:
            raise UserError(
                "callbacks.early_stopping (held-out) found no held-out measurements: build runs with run.assemble "
                "(it splits the measurements before the method's setup)."
            )
        residual = problem.held_out_misfit(image).double()
        s = self.state
        first = torch.isnan(s["smoothed"])
        smoothed = torch.where(first, residual, self.smoothing * s["smoothed"] + (1 - self.smoothing) * residual)
        s["smoothed"] = torch.where(s["stopped"], s["smoothed"], smoothed)
        improved = self.track(smoothed, step, image, recorded=residual, waited=self.every)
        s["best_residual"] = torch.where(improved, residual, s["best_residual"])

    def observe_step(self, module, step: int) -> None:
        if (step + 1) % self.every == 0:
            self.observe(module, step)

    # Results ---------------------------------------------------------------------------------
    def describe(self, module) -> dict:
        split = module.problem.holdout or {}
        return {
            f"{self.prefix}_fraction": split.get("fraction"),
            f"{self.prefix}_pattern": split.get("pattern", self.pattern),
        }

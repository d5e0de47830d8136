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

from untrained.callbacks.base import ReportingCallback
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


class HeldOutStopping(ReportingCallback):
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
        check_integer("callbacks.early_stopping.patience", patience, 1)
        check_integer("callbacks.early_stopping.every", every, 1)
        check_integer("callbacks.early_stopping.check_every", check_every, 1)
        if not 0 <= smoothing < 1:
            raise UserError(f"callbacks.early_stopping.smoothing must be in [0, 1), got {smoothing}.")
        if watch not in self.WATCHED:
            raise UserError(f"callbacks.early_stopping.watch must be one of {self.WATCHED}, got {watch!r}.")
        self.fraction, self.seed, self.pattern = fraction, seed, pattern
        self.patience, self.smoothing, self.every, self.check_every = patience, smoothing, every, check_every
        self.stop_training, self.refit, self.watch, self.prefix = stop_training, refit, watch, prefix
        self.state: dict[str, torch.Tensor] = {}
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.curve: tuple[list[int], list[float]] = ([], [])  # (steps, raw held-out misfits) on the host
        self.restored = None

    # Tracking --------------------------------------------------------------------------------
    def reset(self, image: torch.Tensor) -> None:
        device = image.device
        self.pending = []
        self.state = {
            "smoothed": torch.tensor(math.nan, dtype=torch.float64, device=device),
            "best_smoothed": torch.tensor(math.inf, dtype=torch.float64, device=device),
            "best_residual": torch.tensor(math.nan, dtype=torch.float64, device=device),
            "best_step": torch.tensor(-1, dtype=torch.long, device=device),
            "best_image": torch.zeros_like(image.detach()),
            "wait": torch.tensor(0, dtype=torch.long, device=device),
            "stopped": torch.tensor(False, device=device),
            "stop_step": torch.tensor(-1, dtype=torch.long, device=device),
        }

    @torch.no_grad()
    def observe(self, module, step: int) -> None:
        """One held-out misfit, state updated on the device, no host synchronisation."""
        image = getattr(module, self.watch).detach()
        if not self.state:
            self.reset(image)
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
        running = ~s["stopped"]
        s["smoothed"] = torch.where(running, smoothed, s["smoothed"])
        improved = running & (smoothed < s["best_smoothed"])
        s["best_smoothed"] = torch.where(improved, smoothed, s["best_smoothed"])
        s["best_residual"] = torch.where(improved, residual, s["best_residual"])
        s["best_step"] = torch.where(improved, step, s["best_step"])
        s["best_image"] = torch.where(improved, image, s["best_image"])
        s["wait"] = torch.where(improved, 0, torch.where(running, s["wait"] + self.every, s["wait"]))
        fired = running & (s["wait"] >= self.patience)
        s["stop_step"] = torch.where(fired, step, s["stop_step"])
        s["stopped"] = s["stopped"] | fired
        self.pending.append((step, residual))

    # Checkpoints: a resumed run continues the same curve, minimum and patience --------------------
    @property
    def state_key(self) -> str:
        return f"{type(self).__qualname__}[{self.prefix}]"

    def state_dict(self) -> dict:
        if not self.state:
            return {}
        steps, values = self.curve
        if self.pending:  # not yet on the host: the resumed run's curve must have them too
            steps = steps + [step for step, _ in self.pending]
            values = values + torch.stack([v for _, v in self.pending]).tolist()
        return {"curve": (list(steps), list(values)), "state": dict(self.state)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict

    # Lightning hooks -------------------------------------------------------------------------
    def on_train_start(self, trainer, module) -> None:
        restored, self.restored = self.restored, None
        self.state, self.pending, self.curve = {}, [], ([], [])
        if restored:  # load_state_dict ran before training started
            self.curve = (list(restored["curve"][0]), list(restored["curve"][1]))
            self.state = {k: v.to(module.device) for k, v in restored["state"].items()}

    def on_step_end(self, trainer, module, step: int) -> None:
        if (step + 1) % self.every == 0:
            self.observe(module, step)
        if (step + 1) % self.check_every == 0 and self.check(trainer) and self.stop_training:
            module.flush()  # hand the module's pending records over while logging is still allowed
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.check(trainer)

    def check(self, trainer) -> bool:
        """The one host synchronisation: record and log the pending misfits; whether the rule has fired."""
        if not self.state:
            return False
        if self.pending:
            values = torch.stack([v for _, v in self.pending]).tolist()
            self.curve[0].extend(step for step, _ in self.pending)
            self.curve[1].extend(values)
            if trainer.logger:
                for (step, _), value in zip(self.pending, values):
                    trainer.logger.log_metrics({f"{self.prefix}/residual": value}, step=step)
        self.pending.clear()
        return bool(self.state["stopped"])

    # Results ---------------------------------------------------------------------------------
    @torch.no_grad()
    def report(self, module) -> dict:
        split = module.problem.holdout or {}
        p = self.prefix
        result = {f"{p}_fraction": split.get("fraction"), f"{p}_pattern": split.get("pattern", self.pattern)}
        if not self.state or int(self.state["best_step"]) < 0:
            return {**result, f"{p}_stopped": False}
        s = self.state
        result.update(
            {
                f"{p}_step": int(s["best_step"]),
                f"{p}_stopped": bool(s["stopped"]),
                f"{p}_stop_step": int(s["stop_step"]) if bool(s["stopped"]) else None,
                f"{p}_residual": float(s["best_residual"]),
            }
        )
        problem = module.problem
        if problem.has_ground_truth:
            psnr = float(problem.psnr(s["best_image"]))
            result[f"{p}_psnr"] = psnr
            result[f"{p}_ssim"] = float(problem.ssim(s["best_image"]))
            if int(module.best_step) >= 0:
                result[f"{p}_gap"] = float(module.best_psnr) - psnr
        return result

    def images(self, module) -> dict[str, torch.Tensor]:
        if not self.state or int(self.state["best_step"]) < 0:
            return {}
        return {self.prefix: self.state["best_image"]}

    def curves(self, module) -> dict[str, tuple[list[int], list[float]]]:
        return {f"{self.prefix}_residual": self.curve} if self.curve[0] else {}

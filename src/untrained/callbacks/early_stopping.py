"""Ground-truth-free early stopping for DIP (Wang et al., "Early Stopping for Deep Image Prior";
reference: github.com/sun-umn/Early_Stopping_for_DIP).

Near the PSNR peak the iterates change least, so the running variance of the reconstructions has a
minimum there. ES-WMV tracks the windowed moving variance of the last W estimates, ES-EMV an
exponential moving variance; both stop once the variance has not reached a new minimum for
``patience`` steps and return the iterate at the minimum. As in the reference notebooks they watch the raw
network output of each step (``module.output``), not an exponentially averaged estimate: averaging smooths the
iterates, so their variance keeps falling and the rule never fires. They work with any method and task.

Everything is updated on the device: the window is a ring buffer with running sums (in float64,
recomputed from the buffer once per window against drift), the minimum, its step and its image are
kept with ``torch.where``. The host reads the state only every ``check_every`` steps to decide
whether to stop; the state freezes when the rule fires, so checking late changes nothing but the
few extra steps run.
"""

from __future__ import annotations

import math

import torch

from untrained.callbacks.base import ReportingCallback
from untrained.errors import UserError


class VarianceEarlyStopping(ReportingCallback):
    """Shared machinery: minimum tracking, patience, stopping, reporting. Subclasses define the variance.

    Args:
        patience: P, steps without a new variance minimum before the rule fires.
        stop_training: stop the run when it fires (otherwise only report what it would have chosen).
        check_every: host synchronisations: every N steps (and at the end).
        prefix: the metrics.json keys (``<prefix>_step``, ``<prefix>_psnr``, ...) and image name.
        watch: ``output`` (the raw network output, the paper's rule) or ``estimate`` (after the method's
            averaging, e.g. DIP's ``exp_weight``).
        average: what the rule hands over at the chosen step: 0, the watched image itself (the paper); a weight
            α in (0, 1), the exponential average of the watched images (a ← a + α (x − a), over ~1/α steps),
            which evens out the step-to-step swing of raw iterates (about 1 dB in vanilla DIP without input
            noise) without the lag of DIP's exp_weight 0.99 at an early step.
    """

    WATCHED = ("output", "estimate")

    def __init__(
        self,
        patience: int = 1000,
        stop_training: bool = True,
        check_every: int = 25,
        prefix: str = "es",
        watch: str = "output",
        average: float = 0.0,
    ):
        if not 0 <= average < 1:
            raise UserError(f"callbacks.early_stopping.average must be in [0, 1), got {average}.")
        if patience < 1 or check_every < 1:
            raise UserError("callbacks.early_stopping: patience and check_every must be >= 1.")
        if watch not in self.WATCHED:
            raise UserError(f"callbacks.early_stopping.watch must be one of {self.WATCHED}, got {watch!r}.")
        self.patience, self.stop_training, self.check_every, self.prefix = patience, stop_training, check_every, prefix
        self.watch, self.average = watch, average
        self.observed = 0
        self.last_variance: torch.Tensor | None = None  # the latest value (on the device), for plots and probes
        self.state: dict[str, torch.Tensor] = {}
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.curve: tuple[list[int], list[float]] = ([], [])  # (steps, variances) on the host, for the outputs

    # The statistic ---------------------------------------------------------------------------
    def reset_statistic(self, image: torch.Tensor) -> None:
        raise NotImplementedError

    def variance(self, image: torch.Tensor, index: int) -> torch.Tensor | None:
        """Feed the ``index``-th estimate (flattened); the current variance, or None while not yet defined."""
        raise NotImplementedError

    # Tracking --------------------------------------------------------------------------------
    def reset(self, image: torch.Tensor) -> None:
        flat = image.detach().reshape(-1)
        device = flat.device
        self.observed = 0
        self.pending = []
        self.state = {
            "best_variance": torch.tensor(math.inf, dtype=torch.float64, device=device),
            "best_step": torch.tensor(-1, dtype=torch.long, device=device),
            "best_image": torch.zeros_like(image.detach()),
            "wait": torch.tensor(0, dtype=torch.long, device=device),
            "stopped": torch.tensor(False, device=device),
            "stop_step": torch.tensor(-1, dtype=torch.long, device=device),
        }
        if self.average:
            self.state["average"] = image.detach().clone()
        self.reset_statistic(flat)

    @torch.no_grad()
    def observe(self, image: torch.Tensor, step: int) -> torch.Tensor | None:
        """One estimate in, state updated on the device, no host synchronisation."""
        if not self.state:
            self.reset(image)
        if self.average:  # the image handed over: the running average of the watched images
            self.state["average"].lerp_(image.detach(), self.average)
        variance = self.variance(image.detach().reshape(-1).float(), self.observed)
        self.observed += 1
        self.last_variance = variance
        if variance is None:
            return None
        s = self.state
        running = ~s["stopped"]
        improved = running & (variance < s["best_variance"])
        s["best_variance"] = torch.where(improved, variance, s["best_variance"])
        s["best_step"] = torch.where(improved, step, s["best_step"])
        s["best_image"] = torch.where(improved, s["average"] if self.average else image.detach(), s["best_image"])
        s["wait"] = torch.where(improved, 0, torch.where(running, s["wait"] + 1, s["wait"]))
        fired = running & (s["wait"] >= self.patience)
        s["stop_step"] = torch.where(fired, step, s["stop_step"])
        s["stopped"] = s["stopped"] | fired
        self.pending.append((step, variance))
        return variance

    # Checkpoints: a resumed run continues the same window, minimum and patience -----------------
    statistic_names: tuple[str, ...] = ()

    @property
    def state_key(self) -> str:  # several rules (distinct prefixes) can watch one run and share its checkpoint
        return f"{type(self).__qualname__}[{self.prefix}]"

    def state_dict(self) -> dict:
        if not self.state:
            return {}
        steps, values = self.curve
        if self.pending:  # not yet brought to the host: the resumed run's curve must have them too
            steps = steps + [step for step, _ in self.pending]
            values = values + torch.stack([v for _, v in self.pending]).tolist()
        return {
            "observed": self.observed,
            "curve": (list(steps), list(values)),
            "state": dict(self.state),
            "statistic": {name: getattr(self, name) for name in self.statistic_names},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict

    # Lightning hooks -------------------------------------------------------------------------
    def on_train_start(self, trainer, module) -> None:
        restored, self.restored = getattr(self, "restored", None), None
        self.state, self.pending, self.curve = {}, [], ([], [])
        if restored:  # load_state_dict ran before training started
            self.observed = restored["observed"]
            self.curve = restored.get("curve", ([], []))
            self.state = {k: v.to(module.device) for k, v in restored["state"].items()}
            for name, value in restored["statistic"].items():
                setattr(self, name, value.to(module.device))

    def on_step_end(self, trainer, module, step: int) -> None:
        self.observe(getattr(module, self.watch), step)
        if (step + 1) % self.check_every == 0 and self.check(trainer) and self.stop_training:
            module.flush()  # hand the module's pending records over while logging is still allowed
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.check(trainer)

    def check(self, trainer) -> bool:
        """The one host synchronisation: record and log the pending variances; whether the rule has fired."""
        if not self.state:
            return False
        if self.pending:
            values = torch.stack([v for _, v in self.pending]).tolist()
            self.curve[0].extend(step for step, _ in self.pending)
            self.curve[1].extend(values)
            for (step, _), value in zip(self.pending, values):
                if trainer.logger:
                    trainer.logger.log_metrics({f"{self.prefix}/variance": value}, step=step)
        self.pending.clear()
        return bool(self.state["stopped"])

    # Results ---------------------------------------------------------------------------------
    @torch.no_grad()
    def report(self, module) -> dict:
        if not self.state or int(self.state["best_step"]) < 0:  # too few steps for a variance
            return {f"{self.prefix}_stopped": False}
        s, p = self.state, self.prefix
        result = {
            f"{p}_step": int(s["best_step"]),
            f"{p}_variance": float(s["best_variance"]),
            f"{p}_stopped": bool(s["stopped"]),
            f"{p}_stop_step": int(s["stop_step"]) if bool(s["stopped"]) else None,
        }
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
        return {f"{self.prefix}_variance": self.curve} if self.curve[0] else {}


class WindowedVarianceStopping(VarianceEarlyStopping):
    """ES-WMV: VAR_t = (1/W) Σ_{w<W} mean_pixels (x_{t−w} − x̄_t)², x̄_t the window mean (W = 100, P = 1000)."""

    statistic_names = ("buffer", "total", "total_squares")

    def __init__(self, window: int = 100, **kwargs):
        super().__init__(**kwargs)
        if window < 2:
            raise UserError("callbacks.early_stopping.window must be >= 2.")
        self.window = window

    def reset_statistic(self, image: torch.Tensor) -> None:
        self.buffer = torch.zeros(self.window, image.numel(), device=image.device, dtype=torch.float32)
        self.total = torch.zeros(image.numel(), device=image.device, dtype=torch.float64)
        self.total_squares = torch.zeros((), device=image.device, dtype=torch.float64)

    def variance(self, image: torch.Tensor, index: int) -> torch.Tensor | None:
        slot = index % self.window
        if index >= self.window:
            leaving = self.buffer[slot].double()
            self.total -= leaving
            self.total_squares -= leaving.square().sum()
        self.buffer[slot] = image
        entering = image.double()
        self.total += entering
        self.total_squares += entering.square().sum()
        if slot == self.window - 1:  # once per window: exact sums from the buffer, no drift
            window = self.buffer.double()
            self.total = window.sum(0)
            self.total_squares = window.square().sum()
        if index + 1 < self.window:
            return None
        mean = self.total / self.window
        return (self.total_squares / self.window - mean.square().sum()).clamp_min(0) / image.numel()


class ExponentialVarianceStopping(VarianceEarlyStopping):
    """ES-EMV: μ ← μ + α δ, v ← (1 − α)(v + α mean(δ²)) with δ = x − μ (α = 0.1, P = 1000).

    As in the reference the rule only looks at steps after ``start`` (100) while the averages settle;
    the reference uses the squared norm of δ and clips μ to [0, 1]; here δ² is averaged over entries
    (the same minimiser, a size-independent value) and μ is not clipped, since network space need not
    be [0, 1] (e.g. real/imaginary MRI channels).
    """

    statistic_names = ("mean", "moving_variance")

    def __init__(self, alpha: float = 0.1, start: int = 100, **kwargs):
        super().__init__(**kwargs)
        if not 0 < alpha <= 1:
            raise UserError("callbacks.early_stopping.alpha must be in (0, 1].")
        self.alpha, self.start = alpha, start

    def reset_statistic(self, image: torch.Tensor) -> None:
        self.mean = torch.zeros(image.numel(), device=image.device, dtype=torch.float32)
        self.moving_variance = torch.zeros((), device=image.device, dtype=torch.float64)

    def variance(self, image: torch.Tensor, index: int) -> torch.Tensor | None:
        if index == 0:
            self.mean.copy_(image)
            self.moving_variance.zero_()
        else:
            delta = image - self.mean
            self.mean.add_(delta, alpha=self.alpha)
            spread = delta.double().square().mean()
            self.moving_variance = (1 - self.alpha) * (self.moving_variance + self.alpha * spread)
        return self.moving_variance.clone() if index > self.start else None

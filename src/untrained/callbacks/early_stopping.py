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
from untrained.errors import UserError, check_integer


class MinimumStopping(ReportingCallback):
    """What the ground-truth-free stopping rules share: a statistic observed at each step, whose minimum picks the
    step; the rule fires once ``patience`` steps bring no new minimum, then freezes, and hands over the image of the
    chosen step. All on the device; the host reads the state every ``check_every`` steps. Subclasses observe their
    statistic in ``observe_step`` and pass it to ``track``.

    Args:
        patience: P, steps without a new minimum before the rule fires.
        stop_training: stop the run when it fires (otherwise only report what it would have chosen).
        check_every: host synchronisations: every N steps (and at the end).
        prefix: the metrics.json keys (``<prefix>_step``, ``<prefix>_psnr``, ...) and image name.
        watch: ``output`` (the raw network output) or ``estimate`` (after the method's averaging, e.g. DIP's
            ``exp_weight``).
    """

    WATCHED = ("output", "estimate")
    statistic = "variance"  # the recorded statistic: curve <prefix>_<statistic>, logged as <prefix>/<statistic>
    minimum_key = "best_variance"  # the state entry holding the minimum taken
    reported_key = "best_variance"  # the state entry reported as <prefix>_<statistic>

    def __init__(self, patience: int, stop_training: bool, check_every: int, prefix: str, watch: str):
        check_integer("callbacks.early_stopping.patience", patience, 1)
        check_integer("callbacks.early_stopping.check_every", check_every, 1)
        if watch not in self.WATCHED:
            raise UserError(f"callbacks.early_stopping.watch must be one of {self.WATCHED}, got {watch!r}.")
        self.patience, self.stop_training, self.check_every, self.prefix = patience, stop_training, check_every, prefix
        self.watch = watch
        self.state: dict[str, torch.Tensor] = {}
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.curve: tuple[list[int], list[float]] = ([], [])  # (steps, values) on the host, for the outputs
        self.restored: dict | None = None

    # Tracking --------------------------------------------------------------------------------
    def new_state(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        device = image.device
        return {
            self.minimum_key: torch.tensor(math.inf, dtype=torch.float64, device=device),
            "best_step": torch.tensor(-1, dtype=torch.long, device=device),
            "best_image": torch.zeros_like(image.detach()),
            "wait": torch.tensor(0, dtype=torch.long, device=device),
            "stopped": torch.tensor(False, device=device),
            "stop_step": torch.tensor(-1, dtype=torch.long, device=device),
        }

    def track(
        self,
        value: torch.Tensor,
        step: int,
        image: torch.Tensor,
        recorded: torch.Tensor | None = None,
        waited: int = 1,
    ) -> torch.Tensor:
        """Take ``value`` (the minimised statistic) of ``step``, keeping ``image`` if it is a new minimum; the curve
        records ``recorded`` (default: the value). ``waited``: steps since the previous observation. Returns
        whether the minimum improved (a device tensor)."""
        s = self.state
        running = ~s["stopped"]
        improved = running & (value < s[self.minimum_key])
        s[self.minimum_key] = torch.where(improved, value, s[self.minimum_key])
        s["best_step"] = torch.where(improved, step, s["best_step"])
        s["best_image"] = torch.where(improved, image, s["best_image"])
        s["wait"] = torch.where(improved, 0, torch.where(running, s["wait"] + waited, s["wait"]))
        fired = running & (s["wait"] >= self.patience)
        s["stop_step"] = torch.where(fired, step, s["stop_step"])
        s["stopped"] = s["stopped"] | fired
        self.pending.append((step, value if recorded is None else recorded))
        return improved

    def observe_step(self, module, step: int) -> None:
        raise NotImplementedError

    # Checkpoints: a resumed run continues the same curve, minimum and patience --------------------
    @property
    def state_key(self) -> str:  # several rules (distinct prefixes) can watch one run and share its checkpoint
        return f"{type(self).__qualname__}[{self.prefix}]"

    def extra_state(self) -> dict:
        """A subclass's own statistic state, for checkpoints."""
        return {}

    def restore_extra(self, restored: dict, device) -> None:
        """Put back what ``extra_state`` saved."""

    def state_dict(self) -> dict:
        if not self.state:
            return {}
        steps, values = self.curve
        if self.pending:  # not yet brought to the host: the resumed run's curve must have them too
            steps = steps + [step for step, _ in self.pending]
            values = values + torch.stack([v for _, v in self.pending]).tolist()
        return {"curve": (list(steps), list(values)), "state": dict(self.state), **self.extra_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict

    # Lightning hooks -------------------------------------------------------------------------
    def on_train_start(self, trainer, module) -> None:
        restored, self.restored = self.restored, None
        self.state, self.pending, self.curve = {}, [], ([], [])
        if restored:  # load_state_dict ran before training started
            steps, values = restored.get("curve", ([], []))
            self.curve = (list(steps), list(values))
            self.state = {k: v.to(module.device) for k, v in restored["state"].items()}
            self.restore_extra(restored, module.device)

    def on_step_end(self, trainer, module, step: int) -> None:
        self.observe_step(module, step)
        if (step + 1) % self.check_every == 0 and self.check(trainer) and self.stop_training:
            module.flush()  # hand the module's pending records over while logging is still allowed
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.check(trainer)

    def check(self, trainer) -> bool:
        """The one host synchronisation: record and log the pending values; whether the rule has fired."""
        if not self.state:
            return False
        if self.pending:
            values = torch.stack([v for _, v in self.pending]).tolist()
            self.curve[0].extend(step for step, _ in self.pending)
            self.curve[1].extend(values)
            if trainer.logger:
                for (step, _), value in zip(self.pending, values):
                    trainer.logger.log_metrics({f"{self.prefix}/{self.statistic}": value}, step=step)
        self.pending.clear()
        return bool(self.state["stopped"])

    # Results ---------------------------------------------------------------------------------
    def describe(self, module) -> dict:
        """Entries reported whether or not the rule has chosen a step."""
        return {}

    @torch.no_grad()
    def report(self, module) -> dict:
        p = self.prefix
        result = self.describe(module)
        if not self.state or int(self.state["best_step"]) < 0:  # too few steps for the statistic
            return {**result, f"{p}_stopped": False}
        s = self.state
        result.update(
            {
                f"{p}_step": int(s["best_step"]),
                f"{p}_{self.statistic}": float(s[self.reported_key]),
                f"{p}_stopped": bool(s["stopped"]),
                f"{p}_stop_step": int(s["stop_step"]) if bool(s["stopped"]) else None,
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
        return {f"{self.prefix}_{self.statistic}": self.curve} if self.curve[0] else {}


class VarianceEarlyStopping(MinimumStopping):
    """ES-WMV / ES-EMV: the minimum of a running variance of the iterates. Subclasses define the variance.

    Args (beyond :class:`MinimumStopping`'s):
        average: what the rule hands over at the chosen step: 0, the watched image itself (the paper); a weight
            α in (0, 1), the exponential average of the watched images (a ← a + α (x − a), over ~1/α steps),
            which evens out the step-to-step swing of raw iterates (about 1 dB in vanilla DIP without input
            noise) without the lag of DIP's exp_weight 0.99 at an early step.
    """

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
        super().__init__(patience, stop_training, check_every, prefix, watch)
        self.average = average
        self.observed = 0
        self.last_variance: torch.Tensor | None = None  # the latest value (on the device), for plots and probes

    # The statistic ---------------------------------------------------------------------------
    def reset_statistic(self, image: torch.Tensor) -> None:
        raise NotImplementedError

    def variance(self, image: torch.Tensor, index: int) -> torch.Tensor | None:
        """Feed the ``index``-th estimate (flattened); the current variance, or None while not yet defined."""
        raise NotImplementedError

    # Tracking --------------------------------------------------------------------------------
    def reset(self, image: torch.Tensor) -> None:
        self.observed = 0
        self.pending = []
        self.state = self.new_state(image)
        if self.average:
            self.state["average"] = image.detach().clone()
        self.reset_statistic(image.detach().reshape(-1))

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
        self.track(variance, step, self.state["average"] if self.average else image.detach())
        return variance

    def observe_step(self, module, step: int) -> None:
        self.observe(getattr(module, self.watch), step)

    # Checkpoints: the statistic's own buffers travel with the shared state ------------------------
    statistic_names: tuple[str, ...] = ()

    def extra_state(self) -> dict:
        return {"observed": self.observed, "statistic": {name: getattr(self, name) for name in self.statistic_names}}

    def restore_extra(self, restored: dict, device) -> None:
        self.observed = restored["observed"]
        for name, value in restored["statistic"].items():
            setattr(self, name, value.to(device))


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

"""Uncertainty maps (``uncertainty=ensemble`` / ``mc_dropout``; docs/uncertainty.md).

Both give K samples of the reconstruction in network space: the ensemble's members' chosen iterates (a batched fit
of one measurement, ``run.assemble``), or T stochastic forward passes of one fit's network with its dropout active
at the chosen iterate (``ChosenWeights`` keeps those weights during the fit). ``UncertaintyMaps.write`` turns them
into the mean and the per-pixel std of the displayed image (the metrics' image: magnitude inside the coil support for
MRI; for CT also in attenuation units), the calibration metrics against the ground truth (``metrics.calibration``)
and the figures. ``outputs.write_results`` calls it and hands the samples' mean over as the run's reconstruction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from untrained.callbacks.base import ReportingCallback, StepCallback
from untrained.metrics import CALIBRATION_BLOCK, UCE_BINS, calibration, calibration_bins, psnr, ssim
from untrained.outputs import plt, save_figure, save_npy, save_png, to_numpy_image


class ChosenWeights(StepCallback):
    """The network's weights (and z) at the iterate the run hands over, kept on the device during the fit.

    The iterate is the one ``outputs.fit_metrics`` hands over: the variance rule's (prefix ``es``) when it has fired,
    else the held-out rule's (prefix ``holdout``) when it has chosen a step, else the final one. An iterate of step
    t is the output of step t's forward pass, i.e. of the weights before step t's update:
    this callback keeps those (``before``), hands them to ``last`` after every step (the final iterate's weights) and
    to ``chosen`` with ``torch.where`` whenever the rule's minimum moves to the step just taken (no host
    synchronisation). It must run after the rule (``run.assemble`` puts it after the configured callbacks). The
    copies are in checkpoints, so a resumed fit keeps its choice.
    """

    # rule prefix → whether its iterate is handed over only once it has fired (outputs.fit_metrics)
    RULES = {"es": True, "holdout": False}

    def __init__(self):
        self.rule: ReportingCallback | None = None
        self.before: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.chosen: dict[str, torch.Tensor] = {}
        self.restored: dict | None = None

    @staticmethod
    def current(module) -> dict[str, torch.Tensor]:
        """The tensors a forward pass depends on: the network's state and the method's input z."""
        state = {f"network.{k}": v for k, v in module.network.state_dict().items()}
        state["z"] = module.method.z.detach()
        return state

    def on_train_start(self, trainer, module) -> None:
        rules = {getattr(c, "prefix", None): c for c in trainer.callbacks if hasattr(c, "state")}
        self.rule = next((rules[p] for p in self.RULES if p in rules), None)
        restored, self.restored = self.restored, None
        if restored:
            for name in ("before", "last", "chosen"):
                setattr(self, name, {k: v.to(module.device) for k, v in restored[name].items()})
            return
        self.before = {k: v.clone() for k, v in self.current(module).items()}
        self.last = {k: v.clone() for k, v in self.before.items()}
        self.chosen = {k: v.clone() for k, v in self.before.items()}

    @torch.no_grad()
    def on_step_end(self, trainer, module, step: int) -> None:
        current = self.current(module)
        state = self.rule.state if self.rule is not None else None
        if state:  # the rule's minimum moved to this step: its image came from the weights before the update
            take = state["best_step"] == step
            for name, tensor in self.chosen.items():
                tensor.copy_(torch.where(take, self.before[name], tensor))
        for name, tensor in self.before.items():
            self.last[name].copy_(tensor)
            tensor.copy_(current[name])

    def fired(self) -> bool:
        state = self.rule.state if self.rule is not None else None
        if not state or int(state["best_step"]) < 0:
            return False
        return bool(state["stopped"]) or not self.RULES[self.rule.prefix]

    def state_dict(self) -> dict:
        return {name: dict(getattr(self, name)) for name in ("before", "last", "chosen")} if self.before else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict or None

    @torch.no_grad()
    def passes(self, module, count: int, seed: int) -> torch.Tensor:
        """``count`` forward passes of the network with its dropout active at the chosen iterate's weights (the
        rule's, else the final iterate's), (count, C, ...); seeded, so that a resumed run draws the same passes. The
        network is left with its final weights."""
        network, method = module.network, module.method
        final = {k: v.clone() for k, v in self.current(module).items()}
        self.load(module, self.chosen if self.fired() else self.last)
        device = method.z.device
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                network.train()  # dropout on, BatchNorm on the pass's own statistics, as during the fit
                return torch.cat([network(method.z).detach().float() for _ in range(count)])
        finally:
            self.load(module, final)

    @staticmethod
    def load(module, state: dict[str, torch.Tensor]) -> None:
        network_state = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
        module.network.load_state_dict(network_state)
        module.method.z.copy_(state["z"])


class UncertaintyMaps:
    """Mean, std, calibration metrics and figures of K samples of one measurement's reconstruction."""

    def __init__(
        self,
        kind: str,
        samples: int,
        bins: int = UCE_BINS,
        block: int = CALIBRATION_BLOCK,
        chosen: ChosenWeights | None = None,
        seed: int = 0,
    ):
        self.kind, self.samples, self.bins, self.block = kind, samples, bins, block
        self.chosen, self.seed = chosen, seed

    def draw(self, module) -> torch.Tensor:
        """MC dropout's samples: the passes at the chosen iterate (network space, (T, C, ...))."""
        return self.chosen.passes(module, self.samples, self.seed)

    @torch.no_grad()
    def write(
        self, output_dir: Path, problem, samples: torch.Tensor, member_metrics: list[dict] | None = None
    ) -> tuple[dict, torch.Tensor]:
        """Write mean.{npy,png}, std.{npy,png} (CT: also in attenuation units), error_vs_std.png (with a ground
        truth); return the metrics.json entries and the samples' mean in network space (1, C, ...)."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        samples = samples.detach().float().to(problem.y.device)
        shown = torch.cat([problem.display(sample[None]) for sample in samples]).double()  # (K, C, ...)
        mean, std = shown.mean(0, keepdim=True), shown.std(0, correction=0, keepdim=True)
        mask = self.mask(problem, mean)
        metrics = {
            "uncertainty": self.kind,
            "uncertainty_samples": int(samples.shape[0]),
            "uncertainty_std_mean": float(std[mask > 0].mean()),
            "uncertainty_std_max": float(std.max()),
        }
        save_npy(output_dir / "mean.npy", to_numpy_image(mean))
        save_npy(output_dir / "std.npy", to_numpy_image(std))
        save_png(mean.float(), output_dir / "mean.png", problem.data_range)
        self.draw_std(std, output_dir / "std.png")
        if problem.info.get("units") and problem.info.get("scale"):  # CT: the maps in attenuation units too
            attenuation = samples[:, 0].double() * float(problem.info["scale"])
            save_npy(output_dir / "mean_attenuation.npy", attenuation.mean(0).float().cpu().numpy())
            save_npy(output_dir / "std_attenuation.npy", attenuation.std(0, correction=0).float().cpu().numpy())
        if member_metrics is not None:
            metrics["uncertainty_member_psnr"] = [m.get("reconstruction_psnr") for m in member_metrics]
            metrics["uncertainty_member_best_psnr"] = [m.get("best_psnr") for m in member_metrics]
        if problem.has_ground_truth:
            truth = problem.display(problem.x_true).double()
            error = mean - truth
            metrics["uncertainty_mean_psnr"] = float(psnr(mean, truth, problem.data_range))
            metrics["uncertainty_mean_ssim"] = float(ssim(mean, truth, problem.data_range))
            found = calibration(error[0], std[0], mask[0], self.bins, self.block)
            metrics.update({f"uncertainty_{k}": v for k, v in found.items()})
            self.draw_calibration(error[0], std[0], mask[0], metrics, output_dir / "error_vs_std.png")
        return metrics, samples.mean(0, keepdim=True)

    @staticmethod
    def mask(problem, image: torch.Tensor) -> torch.Tensor:
        """The pixels the maps describe: MRI's coil support (the display is zero outside it), else all."""
        support = getattr(problem.operator, "support", None)
        if support is None:
            return torch.ones_like(image)
        return (torch.zeros_like(image) + support.to(image.device).double() > 0).double()

    @staticmethod
    def draw_std(std: torch.Tensor, path: Path) -> None:
        array = to_numpy_image(std.float())
        fig, ax = plt.subplots(figsize=(4.5, 4))
        if array.ndim == 3:  # colour: the std averaged over the channels
            array = array.mean(-1)
        if array.ndim == 1 or (array.ndim == 2 and std.dim() == 3):  # 1D signals: one curve per channel
            for channel in np.atleast_2d(array):
                ax.plot(channel)
            ax.set(xlabel="sample", ylabel="std")
        else:
            shown = ax.imshow(array, cmap="magma")
            ax.axis("off")
            fig.colorbar(shown, ax=ax, fraction=0.046)
        ax.set_title("per-pixel std")
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
        plt.close(fig)

    def draw_calibration(self, error, std, mask, metrics: dict, path: Path) -> None:
        """|error| against std (pixels, and their means in std bins) and the UCE's calibration diagram."""
        inside = mask > 0
        e, s = error.abs()[inside].cpu(), std[inside].cpu()
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
        keep = torch.randperm(e.numel(), generator=torch.Generator().manual_seed(0))[:5000]
        left.scatter(s[keep], e[keep], s=2, alpha=0.3, color="0.5", label="pixels")
        variance, mse, _ = calibration_bins(e.square(), s.square(), self.bins)
        left.plot(variance.sqrt(), mse.sqrt(), "o-", color="C0", label="binned: RMSE vs RMS std")
        top = max(float(s.max()), float(e.max()), 1e-12)
        left.plot([0, top], [0, top], "k--", lw=0.8, label="|error| = std")
        left.set(xlabel="std", ylabel="|error|", title=f"Spearman {metrics['uncertainty_spearman_pixels']:.2f}")
        left.legend(loc="upper left")
        right.plot(variance, mse, "o-", color="C1")
        top = max(float(variance.max()), float(mse.max()), 1e-12)
        right.plot([0, top], [0, top], "k--", lw=0.8)
        coverage = metrics["uncertainty_coverage_2std"]
        right.set(
            xlabel="mean variance (std²) in bin",
            ylabel="MSE in bin",
            title=f"UCE {metrics['uncertainty_uce']:.3g}, |error| ≤ 2 std: {coverage:.0%}",
        )
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
        plt.close(fig)

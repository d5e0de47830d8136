"""Salehi et al. 2025, Fig. 3: ADP on 1D Gaussian deconvolution solved by unrolling (Arndt's "LISTA L=∞"),
high-accuracy IFT and MAID — upper-level loss against CPU time and lower-level iterations.

Setting of the paper / reference code (1d/ADP_1D.py): deconvolution_1d (n = 200, σ_kernel = 5 samples,
noise 0.005, piecewise-constant truth), elastic net α = 0.108, α_l2 = 0.027, β = 0 (no H¹ term),
lower level from x = 0 with warm starts, the same initial upper step 1e-3 for ½||Ax − y||² for all three,
the same lower-level step λ = 1/||A||². Unrolled: L = 50 layers per step; IFT: proximal gradient to
||G|| ≤ 1e-6 (at most 500 iterations) and CG to 1e-8; MAID: ε₀ = 1e-3, ρ = τ = 0.5, ν = 1.05, step
increase 10/9, c = 1e-8, 5 backtracking trials. Budgets (upper iterations): unrolled 4000 (reference), IFT
3000 (reference: 7500; cut for this shared CPU), MAID 300 (reference cap). CPU time = process time of the
steps (torch on 1 thread), measured on whatever CPU runs this. Writes
experiments/figures/adp_salehi_fig3.png and results/salehi_fig3.json.

Run: python -m experiments.adp.salehi_fig3
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.adp.common import FIGURES, build, fit, save_json  # noqa: E402

SETTING = [
    "task=deconvolution_1d",
    "network.regularizer=elastic_net",
    "network.alpha=0.108",
    "network.alpha_l2=0.027",
    "method.lr=1e-3",
    "method.sobolev_weight=0",
]
SOLVERS = {"unrolled": ["network.layers=50"], "ift": ["method.lower_tol=1e-6", "method.lower_max_iter=500"], "maid": []}


def time_to_reach(history: dict, level: float) -> float | None:
    """CPU time at which the upper-level loss first drops to ``level`` (None: never)."""
    losses = np.asarray(history["upper_loss"])
    hits = np.nonzero(losses <= level)[0]
    return float(history["cpu_time"][hits[0]]) if hits.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unrolled-steps", type=int, default=4000)
    parser.add_argument("--ift-steps", type=int, default=3000)
    parser.add_argument("--maid-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    budgets = {"unrolled": args.unrolled_steps, "ift": args.ift_steps, "maid": args.maid_steps}
    histories = {}
    for solver, overrides in SOLVERS.items():
        module = build(SETTING + [f"method.solver={solver}"] + overrides)
        histories[solver] = fit(module, budgets[solver])
        h = histories[solver]
        print(
            solver,
            f"steps {len(h['step'])}, cpu {h['cpu_time'][-1]:.2f} s, final loss {h['upper_loss'][-1]:.6g}, "
            f"true error {h['true_error'][-1]:.4f}, lower iterations {sum(h['lower_iterations']):.0f}",
            flush=True,
        )
    summary = {
        s: {
            "steps": len(h["step"]),
            "cpu_time_s": h["cpu_time"][-1],
            "final_upper_loss": h["upper_loss"][-1],
            "final_true_error": h["true_error"][-1],
            "lower_iterations": sum(h["lower_iterations"]),
        }
        for s, h in histories.items()
    }
    maid = summary["maid"]
    for other in ("unrolled", "ift"):
        summary[f"maid_vs_{other}"] = {
            "cpu_time_ratio_total": maid["cpu_time_s"] / summary[other]["cpu_time_s"],
            "maid_final_loss_le_other": maid["final_upper_loss"] <= summary[other]["final_upper_loss"],
            # time for MAID to reach the other's final loss, over the time the other needed for it
            "cpu_time_ratio_to_other_final_loss": (
                time_to_reach(histories["maid"], summary[other]["final_upper_loss"]) or float("nan")
            )
            / summary[other]["cpu_time_s"],
            "other_time_to_maid_final_loss_s": time_to_reach(histories[other], maid["final_upper_loss"]),
        }
    print(summary, flush=True)
    save_json(summary, "salehi_fig3.json")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = {"maid": "MAID", "ift": "high-accuracy IFT", "unrolled": "unrolled (LISTA L=∞)"}
    for solver, h in histories.items():
        axes[0].plot(h["cpu_time"], h["upper_loss"], label=labels[solver])
        axes[1].plot(np.cumsum(h["lower_iterations"]), h["upper_loss"], label=labels[solver])
    axes[0].set(xlabel="CPU time [s]", ylabel="upper-level loss", yscale="log", xscale="log")
    axes[1].set(xlabel="lower-level iterations", ylabel="upper-level loss", yscale="log", xscale="log")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "adp_salehi_fig3.png", dpi=100)


if __name__ == "__main__":
    main()

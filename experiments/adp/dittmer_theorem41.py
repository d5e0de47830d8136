"""Dittmer et al. 2020, Theorem 4.1: with B = Σ β_i v_i u_iᵀ restricted to A's singular vectors, the
upper level ½||A x(B) − y||² (R = ½||·||²) is minimised by

    β_i = σ_i/2 + sqrt(σ_i²/4 − α)  if σ_i ≥ 2√α,   β_i = √α  otherwise,

whatever y is. We learn β on integration_1d (n = 200) with network.operator=singular_values and the IFT
solver (lower level to ||G|| ≤ 1e-12 by FISTA, hypergradient by CG). Each coordinate's loss is scaled by
⟨y, v_i⟩², which spans many orders of magnitude, so the steps are Adam's (per-coordinate scale
invariant) with the learning rate decayed geometrically from 1e-2 to 1e-6. Reports max |β − β_Thm|.
Writes experiments/figures/adp_theorem41.png and results/theorem41.json.

Run: python experiments/adp/dittmer_theorem41.py [--steps 3000]
"""

from __future__ import annotations

import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from common import FIGURES, build, save_json  # noqa: E402

ALPHAS = (1e-4, 1e-3, 1e-2)


def theorem_41(sigma: torch.Tensor, alpha: float) -> torch.Tensor:
    above = sigma >= 2 * math.sqrt(alpha)
    root = sigma / 2 + torch.sqrt((sigma**2 / 4 - alpha).clamp_min(0))
    return torch.where(above, root, torch.full_like(sigma, math.sqrt(alpha)))


def learn(alpha: float, steps: int, lr_start: float, lr_end: float):
    module = build(["task=integration_1d", f"task.alpha={alpha}", f"network.alpha={alpha}", "network.operator=singular_values",
                    "method.solver=ift", "method.optimizer=adam", "method.lower_solver=fista", "method.lower_tol=1e-12",
                    "method.lower_max_iter=100000", "method.cg_tol=1e-14", "method.cg_max_iter=2000"])
    method, network, problem = module.method, module.network, module.problem
    optimizer = method.configure_optimizer(network)
    for step in range(steps):
        method.lr = lr_start * (lr_end / lr_start) ** (step / max(steps - 1, 1))
        out = method.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
        method.after_step(network, problem, step, out)
    operator = network.operator
    return operator.reference, operator.weight.detach(), float(out.logs["upper_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr-start", type=float, default=1e-2)
    parser.add_argument("--lr-end", type=float, default=1e-6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, curves = [], []
    for alpha in ALPHAS:
        sigma, beta, loss = learn(alpha, args.steps, args.lr_start, args.lr_end)
        target = theorem_41(sigma, alpha)
        error = (beta - target).abs()
        result = {"alpha": alpha, "steps": args.steps, "max_abs_error": float(error.max()),
                  "max_relative_error": float((error / target).max()), "argmax_index": int(error.argmax()),
                  "final_upper_loss": loss, "coordinates_above_2sqrt_alpha": int((sigma >= 2 * math.sqrt(alpha)).sum())}
        print(result, flush=True)
        results.append(result)
        curves.append((alpha, sigma, beta, target))
    save_json(results, "theorem41.json")
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    for ax, (alpha, sigma, beta, target) in zip(axes, curves):
        ax.loglog(sigma, target, "k-", label="Theorem 4.1")
        ax.loglog(sigma, beta, "r.", ms=3, label="learned β (IFT)")
        ax.loglog(sigma, sigma, ":", color="gray", label="β = σ (B = A)")
        ax.set(xlabel="σ_i", ylabel="β_i", title=f"α = {alpha:g}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "adp_theorem41.png", dpi=100)


if __name__ == "__main__":
    main()

"""Dittmer et al. 2020, Fig. 8: the analytic deep prior on the integration operator (n = 200).

For each α, ADP with the unrolled solver (L = 10 layers, R = ½||·||², λ = 1/||A||², warm start from the
previous output, plain gradient descent on B from B = A, App. 3) is compared with the Tikhonov
solution x(A) of the same α. Rows: x† a singular vector of A (SNR 17.06 dB, Fig. 6) and a general
smooth signal (SNR 18.97 dB, Fig. 7). The singular vector is u_20 (σ ≈ 0.0155 < 2√α for every α here,
the regime where Theorem 4.1's filter damps it less than Tikhonov does; the paper does not say which u it
used). x(B_opt) is the lower-level solution for the final B, solved to high accuracy.
Writes experiments/figures/adp_dittmer_fig8.png and results/dittmer_fig8.json.

Run: python -m experiments.adp.dittmer_fig8 [--steps 3000] [--lr 5e-3]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from experiments.adp.common import FIGURES, build, exact_lower_level, fit, save_json  # noqa: E402

ALPHAS = (1e-4, 1e-3, 1e-2)
SIGNALS = {
    "singular": ["task.signal=singular", "task.snr_db=17.06"],
    "smooth": ["task.signal=smooth", "task.snr_db=18.97"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--singular-index", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, results = [], []
    for signal, task_overrides in SIGNALS.items():
        for alpha in ALPHAS:
            module = build(
                [
                    "task=integration_1d",
                    f"task.singular_index={args.singular_index}",
                    *task_overrides,
                    f"task.alpha={alpha}",
                    f"network.alpha={alpha}",
                    "method.solver=unrolled",
                    f"method.lr={args.lr}",
                ]
            )
            history = fit(module, args.steps)
            problem = module.problem
            x_opt = exact_lower_level(module)
            tikhonov = problem.baseline_tikhonov
            result = {
                "signal": signal,
                "alpha": alpha,
                "steps": args.steps,
                "lr": args.lr,
                "snr_db": problem.info["snr_db"],
                "tikhonov_true_error": float(problem.extra_metrics(tikhonov)["true_error"]),
                "adp_true_error": float(problem.extra_metrics(x_opt)["true_error"]),
                "adp_last_iterate_true_error": history["true_error"][-1],
                "adp_min_true_error": min(history["true_error"]),
                "adp_min_true_error_step": history["true_error"].index(min(history["true_error"])),
                "operator_change_first": history["operator_change"][0],
                "operator_change_last": history["operator_change"][-1],
                "upper_loss_first": history["upper_loss"][0],
                "upper_loss_last": history["upper_loss"][-1],
                "cpu_time_s": history["cpu_time"][-1],
            }
            print(result, flush=True)
            results.append(result)
            rows.append((result, history, problem, x_opt, module.network.operator.weight.detach()))
    save_json(results, "dittmer_fig8.json")
    plot(rows)


def plot(rows) -> None:
    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 3.0 * len(rows)))
    for ax, (result, history, problem, x_opt, weight) in zip(axes, rows):
        grid = torch.arange(problem.image_shape[1]) / problem.image_shape[1]
        ax[0].plot(grid, problem.x_true[0, 0], label="x†")
        ax[0].plot(grid, problem.baseline_tikhonov[0, 0], "--", label="x(A) Tikhonov")
        ax[0].plot(grid, x_opt[0, 0], label="x(B_opt) ADP")
        ax[0].set_title(f"{result['signal']}, α = {result['alpha']:g}")
        ax[0].legend(fontsize=7)
        ax[1].semilogy(history["true_error"], label="ADP x(B_k)")
        ax[1].axhline(result["tikhonov_true_error"], ls="--", color="k", label="Tikhonov x(A)")
        ax[1].set(title="true error ||x − x†||", xlabel="updates of B")
        ax[1].legend(fontsize=7)
        ax[2].semilogy(history["operator_change"])
        ax[2].set(title="||B_k − B_{k+1}||_F", xlabel="updates of B")
        image = ax[3].imshow(weight.numpy(), cmap="viridis")
        ax[3].set_title("B_opt")
        fig.colorbar(image, ax=ax[3])
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "adp_dittmer_fig8.png", dpi=80)


if __name__ == "__main__":
    main()

"""Robustness to overfitting: PSNR vs step of vanilla DIP and its regularised successors on denoising.

The protocol of Fig. 6 of the tutorial (Alkhouri et al., "Understanding Untrained Deep Models for
Inverse Problems"): Gaussian denoising, sigma = 25/255, every method run for 10 000 steps with its
paper's optimiser settings (conf/method/<name>.yaml), PSNR of the estimate at every step, all curves
on one figure. ``vanilla_es_wmv`` is vanilla DIP with the ES-WMV callback stopping it, in the setting of
the ES reference notebook (ES_WMV.ipynb: input perturbation reg_noise_std = 1/30, W = 100, P = 1000); its
curve ends where the rule stopped the run and its row reports the PSNR at the detected step as "final".
Per method it prints peak PSNR, step of the peak, final PSNR and the drop.

    python -m experiments.overfitting                                    # 256², 10 000 steps (GPU)
    python -m experiments.overfitting --size 64 --steps 2000 --device cpu
    python -m experiments.overfitting --methods vanilla vanilla_es_wmv deep_decoder --override task.image=camera

Each run writes its usual outputs under ``--runs``; ``--plot-only`` redraws the figure from them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
ES_RUN = "vanilla_es_wmv"
DEFAULT_METHODS = ["vanilla", ES_RUN, "tv", "self_guided", "aseqdip"]
ES_LABEL = "vanilla + ES-WMV"


def compose(run: str, args, extra: list[str] = ()) -> DictConfig:  # noqa: F821
    """The config of one curve; ``extra``: this run's own overrides (e.g. its paper's learning rate)."""
    from untrained.run import compose as compose_overrides

    overrides = [
        f"method={'vanilla' if run == ES_RUN else run}",
        f"task.image={args.image}",
        f"task.size={args.size}",
        f"task.sigma={args.sigma}",
        f"trainer.max_steps={args.steps}",
        f"trainer.accelerator={args.device}",
        "trainer.enable_progress_bar=false",
        "logger=none",
        f"seed={args.seed}",
        f"paths.output_dir={Path(args.runs).resolve() / run}",
        f"module.log_every={min(args.steps, 100)}",
        *extra,
    ]
    if run == ES_RUN:  # ES_WMV.ipynb: DIP with reg_noise_std = 1/30, stopped by the rule
        overrides += [
            "method.reg_noise_std=0.03333333333333333",
            "callbacks=es_wmv",
            "callbacks.progress_bar=null",
            "callbacks.images=null",
        ] + list(args.override)
    else:  # callbacks.* overrides concern the ES-WMV run only
        overrides += ["callbacks=none"] + [o for o in args.override if not o.startswith("callbacks.")]
    return compose_overrides(overrides, CONF_DIR)


def curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    history = json.loads((run_dir / "history.json").read_text())
    steps = np.asarray(history["step"])
    psnr = np.array([np.nan if v is None else v for v in history["psnr"]], dtype=float)
    keep = ~np.isnan(psnr)
    return steps[keep], psnr[keep]


def summarize(steps: np.ndarray, psnr: np.ndarray) -> dict:
    peak = int(np.argmax(psnr))
    return {
        "peak_psnr": float(psnr[peak]),
        "peak_step": int(steps[peak]),
        "final_psnr": float(psnr[-1]),
        "final_step": int(steps[-1]),
        "drop": float(psnr[peak] - psnr[-1]),
    }


def collect(methods: list[str], runs: Path) -> tuple[dict, dict]:
    """Curves and table rows from the runs' history.json / metrics.json."""
    curves, table = {}, {}
    for method in methods:
        run_dir = runs / method
        if not (run_dir / "history.json").is_file():
            continue
        steps, psnr = curve(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        row = {**summarize(steps, psnr), "seconds_per_step": metrics.get("seconds_per_step")}
        if method == ES_RUN:  # the ES result is the iterate at the detected step
            method = ES_LABEL
            if metrics.get("es_step") is not None:
                detected, psnr_there = metrics["es_step"], metrics["es_psnr"]
                row.update(
                    detected_step=detected,
                    detected_psnr=psnr_there,
                    stopped=metrics["es_stopped"],
                    final_step=detected,
                    final_psnr=psnr_there,
                    drop=row["peak_psnr"] - psnr_there,
                )
        curves[method], table[method] = (steps, psnr), row
    return curves, table


def plot(curves: dict, table: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, (steps, psnr) in curves.items():
        style = {"ls": "--", "lw": 2.0, "color": "k"} if label == ES_LABEL else {"lw": 1.2}
        ax.plot(steps, psnr, label=label, **style)
        if label == ES_LABEL and "detected_step" in table[label]:
            row = table[label]
            ax.plot([row["detected_step"]], [row["detected_psnr"]], "k*", ms=12, label="ES-WMV detected step")
    ax.set(xlabel="step", ylabel="PSNR [dB]", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(table: dict) -> str:
    lines = [
        "| method | peak PSNR [dB] | step of peak | final PSNR [dB] | final step | drop [dB] | s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        if row.get("stopped") is False:
            label += " (did not fire: its current minimum)"
        seconds = row.get("seconds_per_step")
        lines.append(
            f"| {label} | {row['peak_psnr']:.2f} | {row['peak_step']} | {row['final_psnr']:.2f} | "
            f"{row['final_step']} | {row['drop']:.2f} | {'' if seconds is None else f'{seconds:.3f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        help=f"method config names; {ES_RUN}: vanilla stopped by ES-WMV",
    )
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--sigma", type=float, default=25.0, help="in 8-bit levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="trainer.accelerator: auto, cpu, gpu")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "overfitting"), help="where the runs write")
    parser.add_argument("--figure", default=str(ROOT / "experiments" / "figures" / "overfitting.png"))
    parser.add_argument("--plot-only", action="store_true", help="redraw from existing runs")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")

    runs = Path(args.runs)
    if not args.plot_only:
        from untrained.train import train

        for method in args.methods:
            metrics = train(compose(method, args))
            print(
                f"{method}: best {metrics.get('best_psnr', float('nan')):.2f} dB at step {metrics.get('best_step')}, "
                f"final {metrics.get('final_psnr', float('nan')):.2f} dB, {metrics['wall_time_s']:.0f} s",
                flush=True,
            )
    curves, table = collect(args.methods, runs)
    size = f"{args.size}x{args.size}"
    plot(curves, table, Path(args.figure), f"Denoising {args.image} {size}, sigma={args.sigma:g}/255: PSNR vs step")
    text = format_table(table)
    print(text)
    Path(args.figure).with_suffix(".md").write_text(
        f"{args.image} {size}, sigma = {args.sigma:g}/255, {args.steps} steps, seed {args.seed}, "
        f"overrides {args.override or 'none'}\n\n{text}\n"
    )


if __name__ == "__main__":
    main()

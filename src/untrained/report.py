"""Sweep report: ``python -m untrained.report <sweep_dir>`` → tables and figures in ``<sweep_dir>/report/``.

Every run directory under the sweep (one holding ``.hydra/overrides.yaml``) is one row of ``runs.csv``.
Runs are grouped into method × task setting: the method is the ``method`` choice plus any ``method.*``
override that varies across the sweep; the setting is the task plus the other varying overrides, except
the ones averaged over (seeds and dataset items: ``--average-over``). ``summary.{csv,md}`` hold per group
mean ± std over completed runs of best / final / early-stopping PSNR, SSIM, steps and wall time, and the
number of failed runs (diverged, crashed, or without metrics.json). Figures: ``psnr_curves.png``, mean PSNR
vs step per method for each setting (the tutorial's Fig. 6), and ``reconstructions.png``, ground truth and
each method's final reconstruction with its PSNR for the first replicate of each setting (its Fig. 5).

Runs without a ground truth (measured data) sit beside the others: their PSNR and SSIM cells show "–", the
``residual`` column (‖A x − y‖ / ‖y‖ of the handed-over reconstruction) is filled for every run, their curve panel
shows the data loss, and their reconstruction is shown with its residual.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

AVERAGE_OVER = ("seed", "task.seed", "task.slice", "task.index", "task.image")
COLUMNS = {  # summary column → metrics.json key
    "best_psnr": "best_psnr",
    "final_psnr": "final_psnr",
    "es_psnr": "es_psnr",
    "reconstruction_psnr": "reconstruction_psnr",
    "residual": "reconstruction_residual",
    "best_ssim": "best_ssim",
    "final_ssim": "final_ssim",
    "steps": "steps",
    "wall_time_s": "wall_time_s",
}


@dataclass
class Run:
    directory: Path
    overrides: dict[str, str]
    metrics: dict = field(default_factory=dict)
    method: str = ""
    setting: str = ""

    @property
    def failed(self) -> bool:
        return self.metrics.get("status") != "completed"

    @property
    def replicate(self) -> tuple:
        return tuple(sorted(self.overrides.items()))


def parse_overrides(lines: list[str]) -> dict[str, str]:
    pairs = (line.lstrip("+~").split("=", 1) for line in lines)
    return {key: value for key, value in pairs if not key.startswith("hydra")}


def find_runs(sweep_dir: Path) -> list[Run]:
    runs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        run = Run(directory, parse_overrides(yaml.safe_load(overrides_file.read_text()) or []))
        if (directory / "metrics.json").is_file():
            run.metrics = json.loads((directory / "metrics.json").read_text())
        else:  # crashed, still running, or interrupted: the config tells what it was
            config = yaml.safe_load((directory / ".hydra" / "config.yaml").read_text()) or {}
            run.metrics = {
                "status": "no metrics.json",
                "task": config.get("task", {}).get("name"),
                "method": config.get("method", {}).get("name"),
            }
        runs.append(run)
    return runs


def label_runs(runs: list[Run], average_over: tuple[str, ...] = AVERAGE_OVER) -> None:
    """Method and setting labels from the overrides that vary across the sweep."""
    keys = {k for run in runs for k in run.overrides}
    varying = sorted(k for k in keys if len({run.overrides.get(k) for run in runs}) > 1)
    for run in runs:
        method_keys = [k for k in varying if k.startswith("method.")]
        setting_keys = [
            k for k in varying if k not in average_over and k != "method" and k not in method_keys and k != "task"
        ]
        run.method = " ".join(
            [str(run.metrics.get("method") or run.overrides.get("method", "?"))]
            + [f"{k}={run.overrides.get(k)}" for k in method_keys]
        )
        run.setting = " ".join(
            [str(run.metrics.get("task") or run.overrides.get("task", "?"))]
            + [f"{k}={run.overrides.get(k)}" for k in setting_keys]
        )


MISSING = "–"  # a metric a run does not have (no ground truth, no stopping rule)


def mean_std(values: list) -> tuple[float, float] | None:
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values))


def summarize(runs: list[Run]) -> list[dict]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.setting, run.method)].append(run)
    rows = []
    for (setting, method), members in sorted(groups.items()):
        completed = [r for r in members if not r.failed]
        row = {"setting": setting, "method": method, "runs": len(members), "failed": len(members) - len(completed)}
        for column, key in COLUMNS.items():
            row[column] = mean_std([r.metrics.get(key) for r in completed])
        rows.append(row)
    return rows


def format_cell(value, digits: int = 2) -> str:
    if isinstance(value, tuple):
        return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return MISSING if value is None else str(value)


def write_tables(rows: list[dict], runs: list[Run], out: Path) -> None:
    header = ["setting", "method", "runs", "failed", *COLUMNS]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header[:4] + [f"{c}_{s}" for c in COLUMNS for s in ("mean", "std")])
        for row in rows:
            writer.writerow(
                [row[h] for h in header[:4]] + [x for c in COLUMNS for x in (row[c] if row[c] else ("", ""))]
            )
    digits = {"steps": 0, "wall_time_s": 1, "best_ssim": 3, "final_ssim": 3, "residual": 4}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row[h], digits.get(h, 2)) for h in header) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    keys = sorted({k for run in runs for k in run.overrides})
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["directory", "method", "setting", "status", *keys, *COLUMNS, "failure"])
        for run in runs:
            writer.writerow(
                [
                    run.directory,
                    run.method,
                    run.setting,
                    run.metrics.get("status"),
                    *(run.overrides.get(k, "") for k in keys),
                    *(run.metrics.get(k, "") for k in COLUMNS.values()),
                    run.metrics.get("failure", ""),
                ]
            )


def psnr_curve(run: Run, key: str = "psnr") -> tuple[np.ndarray, np.ndarray] | None:
    """A run's history of ``key`` (PSNR; the data loss for runs without a ground truth) as (steps, values)."""
    path = run.directory / "history.json"
    if not path.is_file():
        return None
    history = json.loads(path.read_text())
    if key not in history:
        return None
    pairs = [(s, v) for s, v in zip(history["step"], history[key]) if v is not None]
    return (np.array([s for s, _ in pairs]), np.array([v for _, v in pairs], dtype=float)) if pairs else None


def plot_curves(runs: list[Run], out: Path) -> None:
    settings = sorted({r.setting for r in runs})
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        members = [r for r in runs if r.setting == setting]
        # A setting without a ground truth has no PSNR: its panel shows the data loss.
        key = "psnr" if any(psnr_curve(r) for r in members) else "loss"
        for method in sorted({r.method for r in members}):
            curves = [c for r in members if r.method == method and (c := psnr_curve(r, key))]
            if not curves:
                continue
            length = max(len(s) for s, _ in curves)
            steps = next(s for s, _ in curves if len(s) == length)
            stacked = np.full((len(curves), length), np.nan)
            for i, (_, values) in enumerate(curves):
                stacked[i, : len(values)] = values
            mean, std = np.nanmean(stacked, 0), np.nanstd(stacked, 0)
            ax.plot(steps, mean, label=f"{method} (n={len(curves)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=setting, xlabel="step", ylabel="PSNR [dB]" if key == "psnr" else "data loss (no ground truth)")
        if key == "loss":
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr_curves.png", dpi=110)
    plt.close(fig)


def plot_reconstructions(runs: list[Run], out: Path) -> None:
    from PIL import Image

    settings = sorted({r.setting for r in runs})
    methods = sorted({r.method for r in runs})
    fig, axes = plt.subplots(
        len(settings), len(methods) + 1, figsize=(2.6 * (len(methods) + 1), 2.8 * len(settings)), squeeze=False
    )
    for row, setting in zip(axes, settings):
        members = sorted((r for r in runs if r.setting == setting), key=lambda r: r.replicate)
        truth = next(
            (r.directory / "ground_truth.png" for r in members if (r.directory / "ground_truth.png").is_file()), None
        )
        panels = [("ground truth", truth)] + [(m, next((r for r in members if r.method == m), None)) for m in methods]
        for ax, (title, item) in zip(row, panels):
            ax.axis("off")
            if isinstance(item, Run):
                image = item.directory / "final.png"
                psnr, residual = item.metrics.get("final_psnr"), item.metrics.get("final_residual")
                if isinstance(psnr, (int, float)):
                    caption = f"{psnr:.2f} dB"
                elif isinstance(residual, (int, float)) and not item.failed:  # no ground truth: the data fit
                    caption = f"residual {residual:.3g}"
                else:
                    caption = str(item.metrics.get("status", ""))
                title = f"{title}\n{caption}"
                item = image if image.is_file() else None
            if item is not None:
                ax.imshow(np.asarray(Image.open(item)), cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=8)
        row[0].text(-0.1, 0.5, setting, transform=row[0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=110)
    plt.close(fig)


def report(sweep_dir: Path, out: Path | None = None, average_over: tuple[str, ...] = AVERAGE_OVER) -> list[dict]:
    """Write the tables and figures of a sweep; return the summary rows."""
    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir)
    if not runs:
        raise SystemExit(f"No runs under {sweep_dir} (no */.hydra/overrides.yaml): pass the sweep's directory.")
    label_runs(runs, average_over)
    out = Path(out) if out else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    write_tables(rows, runs, out)
    plot_curves(runs, out)
    plot_reconstructions(runs, out)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m untrained.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, help="where to write (default: <sweep_dir>/report)")
    parser.add_argument(
        "--average-over",
        default=",".join(AVERAGE_OVER),
        help="overrides that are replicates, averaged over (comma-separated)",
    )
    args = parser.parse_args(argv)
    report(args.sweep_dir, args.out, tuple(k for k in args.average_over.split(",") if k))
    out = args.out or args.sweep_dir / "report"
    print((out / "summary.md").read_text())
    print(f"Tables and figures in {out}")


if __name__ == "__main__":
    main()

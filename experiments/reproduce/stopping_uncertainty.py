"""Stopping by held-out measurements against ES-WMV / ES-EMV, and ensembles of fits as uncertainty maps.

Per setting (denoising at σ = 15, 25, 50 on two built-in images, MRI 4×, CT 18 views), vanilla DIP:

- ``full``: all measurements, ES-WMV and ES-EMV watching in observe mode (neither stops the run): the run's best
  PSNR (the oracle) and each rule's detection gap, best PSNR − PSNR at its chosen step (the ES-DIP paper's measure);
- ``holdout``: ``callbacks=es_holdout`` (10 % of the measurements held out, the rule stops the run) with the refit on
  all measurements to the chosen step; its gaps against the full run's best PSNR, with and without the refit, and
  the cost of holding out (its own best PSNR against the full run's);
- ``cells`` (denoising): the pixel-splitting variant, one pixel of each 2×2 cell held out, with the refit;
- ``holdout_f0.05``, ``holdout_f0.2`` (astronaut σ = 25): the held-out fraction's cost;
- ``ensemble``: ``uncertainty=ensemble`` with 4 members (MRI/CT: 3), each handing over its stopping rule's pick
  (stop_early on denoising, the held-out rule on MRI and CT): the mean's PSNR against one member's pick and
  against a single run's best iterate (the DIP paper: +0.57 dB for averaging two runs at σ = 25), the mean of two
  members, and the calibration of the std map (Spearman |error|–std over pixels and 8×8 blocks, UCE, ±2 std
  coverage);
- ``mc_dropout`` (σ = 25): ``uncertainty=mc_dropout``, the same calibration figures.

    python -m experiments.reproduce.stopping_uncertainty --threads 1                    # all (≈ 75 CPU-min)
    python -m experiments.reproduce.stopping_uncertainty --threads 1 --only denoising_astronaut_s25
    python -m experiments.reproduce.stopping_uncertainty --table-only                   # rebuild from the runs
"""

from __future__ import annotations

import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from experiments.reproduce import common

NAME = "stopping_uncertainty"
SILENT = ["callbacks.progress_bar=null", "callbacks.images=null"]  # a callbacks group without its bar and images
EMV_OBSERVER = [  # ES-EMV beside the config's ES-WMV, both in observe mode (callbacks=es_wmv)
    "+callbacks.emv._target_=untrained.callbacks.early_stopping.ExponentialVarianceStopping",
    "+callbacks.emv.prefix=emv",
    "+callbacks.emv.stop_training=false",
    "+callbacks.emv.alpha=0.1",
    "+callbacks.emv.start=100",
    "+callbacks.emv.patience=1000",
]
SCALES = {
    "cpu": {
        "size": 64,
        "steps": 1500,
        "images": ("astronaut", "camera"),
        "sigmas": (15, 25, 50),
        "imaging_size": 64,
        "imaging_steps": 3000,
        "members": 4,
        "imaging_members": 3,
    },
    "paper": {
        "size": 256,
        "steps": 5000,
        "images": ("astronaut", "camera", "coffee"),
        "sigmas": (15, 25, 50),
        "imaging_size": 256,
        "imaging_steps": 5000,
        "members": 8,
        "imaging_members": 8,
    },
}
PAPER_ENSEMBLE_GAIN = 0.57  # Ulyanov et al., Deep Image Prior (IJCV 2020), denoising: averaging two runs at σ = 25
ES_DIP_GAP = 1.0  # the order of ES-WMV's median detection gap on Gaussian denoising (Wang et al.; see early_stopping)


def settings(spec: dict) -> dict[str, dict]:
    """label → {task overrides, steps, which runs}."""
    found = {}
    for image in spec["images"]:
        for sigma in spec["sigmas"]:
            found[f"denoising_{image}_s{sigma}"] = {
                "task": [f"task.image={image}", f"task.sigma={sigma}", f"task.size={spec['size']}", "task.bm3d=false"],
                "steps": spec["steps"],
                "cells": True,
                "mc_dropout": sigma == 25,
                "fractions": (0.05, 0.2) if (image, sigma) == (spec["images"][0], 25) else (),
            }
    size, steps = f"task.size={spec['imaging_size']}", spec["imaging_steps"]
    # Noisier than the tasks' defaults (MRI noise 0.01, noiseless CT), so that vanilla DIP overfits within the run.
    members = spec["imaging_members"]
    found["mri_4x"] = {"task": ["task=mri", size, "task.acceleration=4", "task.noise=0.03"], "steps": steps}
    found["ct_18views"] = {"task": ["task=ct", size, "task.views=18", "task.photons=10000"], "steps": steps}
    for label in ("mri_4x", "ct_18views"):
        found[label]["members"] = members
    return found


def runs_of(label: str, setting: dict, spec: dict) -> dict[str, list[str]]:
    """run name → overrides."""
    base = [*setting["task"], f"trainer.max_steps={setting['steps']}"]
    # The ensemble's members stop by a rule that fires: stop_early on denoising (its default), the held-out rule on
    # MRI and CT (ES-WMV fires on neither within the run; full runs below).
    ensemble_rule = ["callbacks=stop_early" if label.startswith("denoising") else "callbacks=es_holdout", *SILENT]
    members = setting.get("members", spec["members"])
    runs = {
        "full": [*base, "callbacks=es_wmv", *SILENT, "callbacks.early_stopping.stop_training=false", *EMV_OBSERVER],
        "holdout": [*base, "callbacks=es_holdout", *SILENT, "callbacks.early_stopping.refit=true"],
        "ensemble": [*base, *ensemble_rule, "uncertainty=ensemble", f"uncertainty.members={members}"],
    }
    if setting.get("cells"):
        runs["cells"] = [
            *base,
            "callbacks=es_holdout",
            *SILENT,
            "callbacks.early_stopping.pattern=cells",
            "callbacks.early_stopping.refit=true",
        ]
    for fraction in setting.get("fractions", ()):  # the held-out fraction's cost
        runs[f"holdout_f{fraction:g}"] = [
            *base,
            "callbacks=es_holdout",
            *SILENT,
            f"callbacks.early_stopping.fraction={fraction}",
            "callbacks.early_stopping.refit=true",
        ]
    if setting.get("mc_dropout"):
        runs["mc_dropout"] = [*base, *ensemble_rule, "uncertainty=mc_dropout"]
    return runs


def run_setting(args, label: str, setting: dict, spec: dict) -> dict:
    results = {}
    for name, overrides in runs_of(label, setting, spec).items():
        output_dir = common.run_dir(args, NAME, label, name)
        if args.table_only:
            metrics_file = output_dir / "metrics.json"
            if metrics_file.is_file():
                results[name] = json.loads(metrics_file.read_text())
            continue
        start = time.perf_counter()
        results[name] = common.fit(overrides, output_dir, args, reuse=True)
        print(f"{label}/{name}: {time.perf_counter() - start:.0f} s", flush=True)
    ensemble = runs_of(label, setting, spec)["ensemble"]
    results["two_member_mean_psnr"] = two_member_mean_psnr(common.run_dir(args, NAME, label, "ensemble"), ensemble)
    return results


def problem_of(overrides: list[str]):
    """The run's inverse problem (measurement, ground truth, display), rebuilt from its config."""
    from untrained.run import build, compose

    cfg = compose([*common.QUIET, *overrides])
    return build(cfg.task, "task")


def two_member_mean_psnr(ensemble_dir: Path, overrides: list[str]) -> float | None:
    """The PSNR of the mean of members 0 and 1 (the DIP paper's 'two runs averaged'), from their reconstructions."""
    import torch

    files = [ensemble_dir / f"member_{b}" / "reconstruction.npy" for b in (0, 1)]
    if not all(f.is_file() for f in files):
        return None
    problem = problem_of(overrides)
    mean = torch.from_numpy(np.mean([np.load(f) for f in files], axis=0))[None]
    return float(problem.psnr(mean)) if problem.has_ground_truth else None


def below(reference: float, value: float | None) -> float | None:
    return None if value is None else reference - value


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(args, results: dict, spec: dict) -> common.Table:
    protocol = (
        f"vanilla DIP (the default skip net, default performance settings: bf16 autocast where the CPU has AMX), "
        f"seed 0; denoising at {spec['size']}², {spec['steps']} steps, images {', '.join(spec['images'])} at "
        f"σ = {', '.join(map(str, spec['sigmas']))} (/255); MRI: simulated 15-coil phantom, 4× random mask, k-space "
        f"noise 0.03; CT: Shepp-Logan, 18 views, Poisson noise at 10⁴ photons per ray (noisier than the tasks' "
        f"defaults, so that DIP overfits within the run); MRI/CT at {spec['imaging_size']}², "
        f"{spec['imaging_steps']} steps. ES-WMV W = 100, P = 1000 and ES-EMV α = 0.1, P = 1000 in observe mode on the "
        "full fit; the held-out rule with the defaults of conf/callbacks/es_holdout.yaml (10 %, P = 500) and the "
        f"refit; ensembles of {spec['members']} members (MRI/CT: {spec['imaging_members']}) stopping by a rule that "
        "fires: stop_early (ES-WMV P = 200, averaged output) on denoising, the held-out rule on MRI/CT; MC dropout "
        "(p = 0.3, T = 25) at σ = 25 with stop_early."
    )
    if args.scale == "cpu":
        protocol += " Reduced from paper scale (256–512² images, 5000 steps)."
    t = common.Table(
        NAME,
        "Stopping by held-out measurements vs ES-WMV / ES-EMV; ensembles as uncertainty maps",
        "Wang et al., Early Stopping for Deep Image Prior (TMLR) for ES-WMV/ES-EMV (median gap ≲ 1 dB on Gaussian "
        "denoising); Ulyanov et al., Deep Image Prior (IJCV 2020), +0.57 dB for averaging two runs at σ = 25; "
        "Laves et al. (MIDL 2020) for UCE.",
        protocol,
    )
    lines = [
        "Detection gaps per run, dB (gap = the full fit's best PSNR − PSNR of what the rule hands over; "
        "'fired' = the rule stopped / would have stopped):",
        "",
        "| setting | best PSNR (step) | ES-WMV gap (fired) | ES-EMV gap (fired) | held-out gap (fired, step) | "
        "held-out + refit gap | held-out fit's best − full best | cells gap (fired) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gaps = {"wmv": [], "emv": [], "holdout": [], "refit": [], "cells": [], "cost": []}
    fired = {"wmv": [], "emv": [], "holdout": [], "cells": []}
    for label, r in results.items():
        full = r.get("full", {})
        best = full.get("best_psnr")
        if best is None:
            continue
        gap = partial(below, best)
        cells = [label, f"{best:.2f} ({full.get('best_step')})"]
        for key, prefix in (("wmv", "es"), ("emv", "emv")):
            g = gap(full.get(f"{prefix}_psnr"))
            gaps[key].append(g)
            fired[key].append(bool(full.get(f"{prefix}_stopped")))
            cells.append(f"{common.number(g)} ({'yes' if full.get(f'{prefix}_stopped') else 'no'})")
        holdout = r.get("holdout", {})
        g = gap(holdout.get("holdout_psnr"))
        gaps["holdout"].append(g)
        fired["holdout"].append(bool(holdout.get("holdout_stopped")))
        cells.append(
            f"{common.number(g)} ({'yes' if holdout.get('holdout_stopped') else 'no'}, {holdout.get('holdout_step')})"
        )
        g = gap(holdout.get("holdout_refit_psnr"))
        gaps["refit"].append(g)
        cells.append(common.number(g))
        cost = None if holdout.get("best_psnr") is None else holdout["best_psnr"] - best
        gaps["cost"].append(cost)
        cells.append(common.number(cost))
        if "cells" in r:
            c = r["cells"]
            g = gap(c.get("holdout_psnr"))
            gaps["cells"].append(g)
            fired["cells"].append(bool(c.get("holdout_stopped")))
            cells.append(f"{common.number(g)} ({'yes' if c.get('holdout_stopped') else 'no'})")
        else:
            cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    for key, title in (
        ("wmv", "ES-WMV"),
        ("emv", "ES-EMV"),
        ("holdout", "held-out rule"),
        ("refit", "held-out rule + refit"),
        ("cells", "held-out cells (denoising)"),
    ):
        paper = ES_DIP_GAP if key == "wmv" else None
        n_fired = sum(fired.get(key, [])) if key in fired else None
        verdict = f"fired on {n_fired}/{len(fired[key])} runs" if key in fired else "refit to the held-out pick"
        t.add(f"median detection gap, {title}, all settings", paper, median(gaps[key]), verdict)
    t.add(
        "median cost of holding out (held-out fit's best − full fit's best)",
        None,
        median(gaps["cost"]),
        "what fitting on 90 % of the measurements costs at its best iterate",
    )
    cal_lines = [
        "",
        "Ensembles and MC dropout (PSNR in dB; calibration of the std map against the true error):",
        "",
        "| setting | run | mean PSNR | one member's pick | single run's best | mean of 2 | ρ pixels | ρ 8×8 blocks | "
        "UCE | coverage ±2 std | mean std |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gains_vs_member, gains_vs_best, gains_two = [], [], []
    for label, r in results.items():
        best = r.get("full", {}).get("best_psnr")
        for name in ("ensemble", "mc_dropout"):
            m = r.get(name)
            if not m:
                continue
            mean = m.get("uncertainty_mean_psnr")
            members = m.get("uncertainty_member_psnr") or []
            member = members[0] if members else None
            two = r.get("two_member_mean_psnr") if name == "ensemble" else None
            if name == "ensemble" and mean is not None:
                if member is not None:
                    gains_vs_member.append(mean - member)
                if best is not None:
                    gains_vs_best.append(mean - best)
                if two is not None and member is not None and label.endswith("s25"):
                    gains_two.append(two - member)
            cal_lines.append(
                "| "
                + " | ".join(
                    [
                        label,
                        name,
                        common.number(mean),
                        common.number(member),
                        common.number(best),
                        common.number(two),
                        common.number(m.get("uncertainty_spearman_pixels")),
                        common.number(m.get("uncertainty_spearman_blocks")),
                        common.number(m.get("uncertainty_uce"), 4),
                        common.number(m.get("uncertainty_coverage_2std")),
                        common.number(m.get("uncertainty_std_mean"), 4),
                    ]
                )
                + " |"
            )
    t.add(
        "mean of two members − one member, σ = 25",
        PAPER_ENSEMBLE_GAIN,
        median(gains_two),
        "the DIP paper's averaging of two runs (median over the σ = 25 images)",
    )
    t.add(
        f"ensemble mean ({spec['members']}) − one member's pick, all settings",
        None,
        median(gains_vs_member),
        "same stopping rule for both",
    )
    t.add(
        f"ensemble mean ({spec['members']}) − a single run's best iterate (oracle), all settings",
        None,
        median(gains_vs_best),
        "positive: the ensemble beats even the oracle-stopped single run",
    )
    fraction_lines = []
    for label, r in results.items():
        studied = sorted(
            (float(m.get("holdout_fraction") or 0), m)
            for name, m in r.items()
            if isinstance(m, dict) and name.startswith("holdout") and m.get("holdout_pattern") == "random"
        )
        if len(studied) < 2 or "full" not in r:
            continue
        best = r["full"]["best_psnr"]
        fraction_lines += [
            "",
            f"The held-out fraction's cost ({label}; full fit's best {best:.2f} dB):",
            "",
            "| fraction | fit's best PSNR | − full best | rule's pick | refit to the pick | refit − full best | step |",
            "|---|---|---|---|---|---|---|",
        ]
        for fraction, m in studied:
            fraction_lines.append(
                f"| {fraction:.2f} | {common.number(m.get('best_psnr'))} | "
                f"{common.number(below(m['best_psnr'], best) if m.get('best_psnr') is not None else None)} | "
                f"{common.number(m.get('holdout_psnr'))} | {common.number(m.get('holdout_refit_psnr'))} | "
                f"{common.number(below(m['holdout_refit_psnr'], best) if m.get('holdout_refit_psnr') else None)} | "
                f"{m.get('holdout_step')} |"
            )
    t.notes += [
        "The CPU table's runs were made by two processes side by side (one torch thread each; `--only` with the "
        "astronaut settings and MRI, and with the camera settings and CT), the fraction study by a third "
        "(`--only denoising_astronaut_s25`), then the table by `--table-only`: its wall time is the sum of the "
        "runs' fit times; the two processes took 41 minutes side by side on this 2-core machine.",
        "A rule that did not fire hands over its current minimum (ES-WMV/EMV) at the end of the run; the "
        "held-out rule's pick is its minimum. ES-WMV's misses at 64² are the shapes diagnosed in "
        "early_stopping_cpu.md (a second descent of the variance once the noise is fitted).",
        "The ensemble's std measures how much the members disagree, not their shared bias: a systematic error that "
        "every member makes (in the MRI phantom's centre: the maps figure) is not in the std.",
    ]
    t.details += lines + cal_lines + fraction_lines
    t.data = {"runs": results}
    return t


def maps_figure(args, spec: dict, path: Path) -> Path | None:
    """The README's picture: per setting, one member's pick, the ensemble mean, its |error| and the std map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    rows = []
    for label, setting in settings(spec).items():
        folder = common.run_dir(args, NAME, label, "ensemble")
        if label in ("denoising_astronaut_s25", "mri_4x", "ct_18views") and (folder / "std.npy").is_file():
            problem = problem_of(runs_of(label, setting, spec)["ensemble"])
            member = torch.from_numpy(np.load(folder / "member_0" / "reconstruction.npy"))[None]
            member, truth = (picture(problem.display(image)[0].numpy()) for image in (member, problem.x_true))
            mean, std = picture(np.load(folder / "mean.npy")), picture(np.load(folder / "std.npy"))
            rows.append((label, member, mean, np.abs(mean - truth), std))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.7 * len(rows)), squeeze=False)
    for ax_row, (label, member, mean, error, std) in zip(axes, rows):
        top = float(np.percentile(error, 99))
        panels = [
            (member, f"{label}: one member", "gray", 1.0),
            (mean, "ensemble mean", "gray", 1.0),
            (error, "|error| of the mean", "magma", top),
            (std, "std across members", "magma", top),
        ]
        for ax, (image, title, cmap, vmax) in zip(ax_row, panels):
            shown = ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if cmap == "magma":
                fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def picture(array: np.ndarray) -> np.ndarray:
    """A saved image as a 2D grey picture (channels first or last, averaged)."""
    array = np.asarray(array, dtype=np.float32).squeeze()
    if array.ndim == 3:
        array = array.mean(0) if array.shape[0] in (1, 3) else array.mean(-1)
    return array


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--only", nargs="*", default=None, help="run only these setting labels")
    p.add_argument("--steps", type=int, default=None, help="steps of every run (default: the scale's)")
    p.add_argument("--size", type=int, default=None, help="image size of every run (default: the scale's)")
    args = p.parse_args()
    common.setup(args)
    spec = dict(SCALES[args.scale])
    if args.steps:
        spec.update(steps=args.steps, imaging_steps=args.steps)
    if args.size:
        spec.update(size=args.size, imaging_size=args.size)
    start = time.perf_counter()
    results = {}
    for label, setting in settings(spec).items():
        if args.only and label not in args.only:
            continue
        results[label] = run_setting(args, label, setting, spec)
    wall = time.perf_counter() - start
    if args.table_only:  # the time the runs took, not the rebuild's
        wall = sum(m.get("wall_time_s") or 0.0 for r in results.values() for m in r.values() if isinstance(m, dict))
    table(args, results, spec).write(args, wall)
    figure = maps_figure(args, spec, Path(args.results) / f"{NAME}_{args.scale}_maps.png")
    if figure:
        print(f"maps: {figure}")


if __name__ == "__main__":
    main()

"""Ulyanov et al. 2018 (Deep Image Prior), Gaussian denoising at σ = 25/255: DIP without and with output averaging
against CBM3D and non-local means.

The paper's numbers (PSNR averaged over its colour test images): DIP 29.22 dB, DIP with averaging 30.43 dB, CBM3D
31.42 dB, NLM 30.26 dB. Its images are not available here, so the table compares the paper's RELATIONS (method vs
baseline, method vs method) with ours on scikit-image's built-in colour images; the absolute means are listed too,
marked as not comparable. Both DIP runs follow the reference notebook (denoising.ipynb: skip net [128]*5, skip 4,
32-channel uniform input × 1/10, Adam lr 0.01, 3000 steps, reg_noise_std = 1/30; ``experiment=dip_denoising``); the
averaged run reports the exponential average of the outputs (exp_weight = 0.99), the other the raw output. The
notebook prints the PSNR at every step and the paper reports it at the fixed step count: the table's protocol is the
FINAL iterate; the best iterate (which needs the ground truth) is extra information.

    python -m experiments.reproduce.dip_denoising --scale cpu --threads 1   # reduced (see the table's protocol)
    python -m experiments.reproduce.dip_denoising --scale paper             # 512², 3000 steps, 7 images (GPU)
"""

from __future__ import annotations

import json
import statistics
import time

from experiments.reproduce import common

NAME = "dip_denoising"
SOURCE = (
    "Ulyanov, Vedaldi & Lempitsky, Deep Image Prior (CVPR 2018 / IJCV 2020), denoising at σ = 25: DIP 29.22, "
    "DIP + averaging 30.43, CBM3D 31.42, NLM 30.26 dB; settings from github.com/DmitryUlyanov/deep-image-prior "
    "denoising.ipynb (F16 setting)"
)
COLOUR_IMAGES = ("astronaut", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
# Per scale: image side, images, DIP steps, deep decoder steps and its k (channels), the images of the deep decoder's
# long (overfitting) run and its steps (default 10 000, deep_decoder_denoising.LONG_STEPS).
PROTOCOLS = {
    "paper": {
        "size": 512,
        "images": COLOUR_IMAGES,
        "dip_steps": 3000,
        "dd_steps": 1900,
        "dd_channels": 128,
        "dd_long_images": ("astronaut",),  # the deep decoder notebook's 10 000-step run
    },
    # 2 CPU cores shared: 64² images (the skip net's cost per step is roughly proportional to the pixels), 2/5 of the
    # DIP steps; the deep decoder keeps the reference's 1900 steps, with k = 64 (k = 16, the paper's ratio of
    # parameters to pixels, underfits at 64²: see deep_decoder_denoising.CPU_K16).
    "cpu": {
        "size": 64,
        "images": ("astronaut", "chelsea", "coffee"),
        "dip_steps": 1200,
        "dd_steps": 1900,
        "dd_channels": 64,
        "dd_long_images": ("astronaut",),
    },
    # The tests' tiny protocol (--smoke): only checks that the machinery runs and writes every row.
    "smoke": {
        "size": 32,
        "images": ("coffee",),
        "dip_steps": 20,
        "dd_steps": 20,
        "dd_channels": 8,
        "dd_long_images": ("coffee",),
        "dd_long_steps": 30,
    },
}
# The paper's means [dB] and the relations the table checks.
PAPER = {"dip": 29.22, "dip_avg": 30.43, "cbm3d": 31.42, "nlm": 30.26}
LABELS = {"dip": "DIP", "dip_avg": "DIP + averaging", "cbm3d": "CBM3D", "nlm": "NLM"}
RELATIONS = [("dip", "cbm3d"), ("dip_avg", "cbm3d"), ("dip_avg", "dip"), ("nlm", "cbm3d")]
# fp32 as the papers (the speed policy would turn bf16 autocast on for GPUs and AMX CPUs).
FP32 = ["performance.autocast=false"]
TOLERANCE_DB = 0.5  # a relation within this of the paper's counts as reproduced


def add_options(p):
    p.add_argument("--smoke", action="store_true", help="a tiny protocol (32², 20 steps, 1 image) for the tests")
    return p


def protocol(args) -> dict:
    return PROTOCOLS["smoke" if args.smoke else args.scale]


def dip_overrides(prot: dict, image: str, averaged: bool) -> list[str]:
    """One DIP run of the protocol: the reference notebook's setting, with or without output averaging."""
    return [
        "experiment=dip_denoising",  # reg_noise_std = 1/30, exp_weight = 0.99, nlm and bm3d baselines
        f"task.image={image}",
        f"task.size={prot['size']}",
        f"trainer.max_steps={prot['dip_steps']}",
        f"module.log_every={min(25, prot['dip_steps'])}",
        *FP32,
        *([] if averaged else ["method.exp_weight=0"]),
    ]


def dip_runs(args, prot: dict) -> dict[str, dict[str, dict]]:
    """metrics.json of the two DIP runs per image: {image: {"dip": ..., "dip_avg": ...}}. Finished runs are reused
    (also by deep_decoder_denoising, whose DIP rows are these runs)."""
    steps = prot["dip_steps"]
    return {
        image: {
            run: result(
                args, dip_overrides(prot, image, run == "dip_avg"), run_dir(args, prot, image, f"{run}_{steps}")
            )
            for run in ("dip", "dip_avg")
        }
        for image in prot["images"]
    }


def result(args, overrides: list[str], output_dir) -> dict:
    """A finished run's metrics (reused), a new run's, or with --table-only the existing run's or an error."""
    if args.table_only:
        metrics = output_dir / "metrics.json"
        if not metrics.is_file():
            raise SystemExit(f"--table-only: no finished run in {output_dir}; run without --table-only first.")
        return json.loads(metrics.read_text())
    return common.fit(overrides, output_dir, args, reuse=True)


def run_dir(args, prot: dict, image: str, run: str):
    """One run's directory; the size and step count are in its path, so a changed protocol never reuses a run."""
    return common.run_dir(args, NAME, f"{prot['size']}px", image, run)


def values(runs: dict, image: str) -> dict[str, float]:
    """PSNRs of one image: final and best of each DIP run, the baselines (taken from the averaged run: both runs
    denoise the same noisy image, noise_seed = seed)."""
    dip, avg = runs[image]["dip"], runs[image]["dip_avg"]
    return {
        "dip": dip["final_psnr"],
        "dip_best": dip["best_psnr"],
        "dip_best_step": dip["best_step"],
        "dip_avg": avg["final_psnr"],
        "dip_avg_best": avg["best_psnr"],
        "dip_avg_best_step": avg["best_step"],
        "cbm3d": avg.get("baseline_cbm3d_psnr"),
        "nlm": avg.get("baseline_nlm_psnr"),
        "noisy": avg["baseline_noisy_psnr"],
    }


def mean(per_image: dict[str, dict], key: str, minus: str | None = None) -> float | None:
    """Mean over the images of v[key] (− v[minus]), over the images where both are known."""
    items = [v[key] - (v[minus] if minus else 0.0) for v in per_image.values() if None not in (v[key], v.get(minus, 0))]
    return statistics.fmean(items) if items else None


def verdict(paper: float | None, ours: float | None) -> str:
    if paper is None or ours is None:
        return ""
    if abs(ours - paper) <= TOLERANCE_DB:
        return f"reproduced (within {TOLERANCE_DB} dB)"
    if (ours > 0) != (paper > 0):
        return "NOT reproduced: opposite sign"
    return f"same sign, {'larger' if abs(ours) > abs(paper) else 'smaller'} magnitude"


def per_image_note(image: str, v: dict) -> str:
    return (
        f"{image}: noisy {v['noisy']:.2f}, CBM3D {common.number(v['cbm3d'])}, NLM {common.number(v['nlm'])}, "
        f"DIP {v['dip']:.2f} (best {v['dip_best']:.2f} at step {v['dip_best_step']}), "
        f"DIP + averaging {v['dip_avg']:.2f} (best {v['dip_avg_best']:.2f} at step {v['dip_avg_best_step']}) dB"
    )


def protocol_text(args, prot: dict) -> str:
    text = (
        f"Gaussian noise σ = 25/255 (clipped to [0, 1], seed 0), {len(prot['images'])} built-in colour images "
        f"({', '.join(prot['images'])}) at {prot['size']}², DIP (experiment=dip_denoising: skip net [128]*5, "
        f"reg_noise_std 1/30, Adam 0.01) {prot['dip_steps']} steps without (exp_weight 0) and with (0.99) output "
        "averaging, fp32, PSNR of the final iterate (the paper's protocol; best iterate as extra information); CBM3D "
        "(bm3d package) and NLM (scikit-image, fast mode, h = 0.6σ, 5×5 patches, 13×13 window) with the known σ"
    )
    if args.smoke:
        return text + ". SMOKE protocol (tests only): numbers meaningless."
    if args.scale == "cpu":
        text += (
            ". Reduced for 2 CPU cores: 3 of the 7 colour images, 64² instead of 512², 1200 instead of 3000 DIP "
            "steps (the paper's images are not available at any scale: relations only)."
        )
    return text


def build_table(args, runs: dict, prot: dict) -> common.Table:
    table = common.Table(
        NAME, "DIP denoising (σ = 25): DIP, DIP + averaging, CBM3D, NLM", SOURCE, protocol_text(args, prot)
    )
    per_image = {image: values(runs, image) for image in prot["images"]}
    for a, b in RELATIONS:
        paper = PAPER[a] - PAPER[b]
        ours = mean(per_image, a, b)
        table.add(f"{LABELS[a]} − {LABELS[b]}", paper, ours, verdict(paper, ours))
    table.add("best-iterate DIP − CBM3D (extra: needs the ground truth)", None, mean(per_image, "dip_best", "cbm3d"))
    table.add("best-iterate DIP + averaging − CBM3D (extra)", None, mean(per_image, "dip_avg_best", "cbm3d"))
    for key in ("dip", "dip_avg", "cbm3d", "nlm"):
        table.add(f"mean {LABELS[key]}", PAPER[key], mean(per_image, key), "not comparable: other images")
    table.notes += diagnosis(per_image, prot)
    table.notes.append(fit_time_note(runs))
    table.notes += [per_image_note(image, v) for image, v in per_image.items()]
    table.data = {"protocol": {k: list(v) if isinstance(v, tuple) else v for k, v in prot.items()}, "runs": runs}
    return table


def fit_time_note(*run_sets: dict) -> str:
    """The runs' own fitting time (the table's wall time counts only this invocation; finished runs are reused)."""
    seconds = sum(m.get("wall_time_s", 0.0) for runs in run_sets for image in runs.values() for m in image.values())
    return f"Fitting time of the table's runs (as they ran, possibly in an earlier invocation): {seconds / 60:.1f} min."


def diagnosis(per_image: dict[str, dict], prot: dict) -> list[str]:
    """Lines explaining a shortfall, measured on the runs themselves: how far the final iterate is past DIP's peak,
    and how far even the best iterate is from CBM3D."""
    notes = []
    drop, drop_avg = mean(per_image, "dip_best", "dip"), mean(per_image, "dip_avg_best", "dip_avg")
    peak = statistics.fmean(v["dip_best_step"] for v in per_image.values())
    if drop > TOLERANCE_DB:
        notes.append(
            f"Diagnosis (final iterate): DIP peaks at step {peak:.0f} on average and its raw output ends {drop:.2f} dB "
            f"below that peak at step {prot['dip_steps']} (the averaged output {drop_avg:.2f} dB below its own): the "
            "fixed step count lands in the noise-fitting phase, which pulls DIP − CBM3D down and DIP + averaging − "
            "DIP up (averaging smooths the fitted noise). How soon DIP fits the noise depends on the image and its "
            "size; the paper's step count was set for its 512² images."
        )
    else:
        notes.append(
            f"The final iterate is within {TOLERANCE_DB} dB of the best (DIP {drop:.2f}, averaged {drop_avg:.2f} dB)."
        )
    nlm_gap = mean(per_image, "nlm", "cbm3d")
    if nlm_gap is not None and abs(nlm_gap - (PAPER["nlm"] - PAPER["cbm3d"])) > TOLERANCE_DB:
        notes.append(
            f"Diagnosis (NLM − CBM3D {nlm_gap:.2f} dB vs the paper's {PAPER['nlm'] - PAPER['cbm3d']:.2f}): the "
            "paper does not state its NLM implementation or parameters; ours is scikit-image's fast mode with h = "
            f"0.6σ (the best of 0.4–1.2σ on these images at 128²). Not investigated further on {prot['size']}² images."
        )
    best_gap = mean(per_image, "dip_best", "cbm3d")
    if best_gap is not None and best_gap < PAPER["dip"] - PAPER["cbm3d"] - TOLERANCE_DB:
        notes.append(
            f"Diagnosis (prior vs CBM3D): even DIP's best iterate is {-best_gap:.2f} dB below CBM3D (the paper's final "
            f"iterate: {PAPER['cbm3d'] - PAPER['dip']:.2f} dB), so the gap is not the stopping step alone: on these "
            f"{prot['size']}² images (downscaled photographs, mostly fine detail) DIP's prior gains less over CBM3D's "
            "than on the paper's images; the settings are the reference's (checked by "
            "tests/test_reproduce_denoising.py)."
        )
    return notes


def main(argv=None):
    args = add_options(common.parser(__doc__)).parse_args(argv)
    common.setup(args)
    start = time.time()
    prot = protocol(args)
    runs = dip_runs(args, prot)
    table = build_table(args, runs, prot)
    return table.write(args, time.time() - start)


if __name__ == "__main__":
    main()

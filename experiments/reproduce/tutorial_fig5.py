"""The tutorial's Figure 5 (Alkhouri et al., "Understanding Untrained Deep Models for Inverse Problems", seed 002;
settings from Fig. 5 of aSeqDIP): MRI 4× (15 coils, 320²), CT 18 of 180 views (256²), inpainting with hole ratio
0.25, by vanilla DIP, DIP + ES-WMV, TV-DIP, Self-Guided DIP, aSeqDIP and the deep decoder, next to the converged
classical baselines each task reports (metrics.json's baseline_* keys).

The papers' data (fastMRI knee, AAPM CT, CBSD68) are not available here: MRI uses the built-in 15-coil simulation,
CT the Shepp-Logan phantom, inpainting the built-in 'chelsea' image; so the table compares relations (method vs
baseline, method vs method) and states whether the issue's targets are met.

    python -m experiments.reproduce.tutorial_fig5 --scale cpu --threads 1
    python -m experiments.reproduce.tutorial_fig5 --scale paper --device gpu
"""

from __future__ import annotations

import time

from experiments.reproduce import common

NAME = "tutorial_fig5"
SIZES = {"cpu": {"mri": 64, "ct": 64, "inpainting": 64}, "paper": {"mri": 320, "ct": 256, "inpainting": 256}}
TASKS = {
    "mri": {
        "label": "MRI 4×",
        "overrides": ["task=mri", "task.acceleration=4", "task.center_fraction=0.08"],
        "baselines": {
            "zero_filled": "zero-filled",
            "cg_sense": "CG-SENSE",
            "l1_wavelet": "L1-wavelet",
            "tv_sense": "TV",
        },
    },
    "ct": {
        "label": "CT 18 views",
        "overrides": ["task=ct", "task.views=18", "task.view_selection=equispaced"],
        "baselines": {"fbp": "FBP", "tv": "TV-PDHG", "sirt": "SIRT", "cgls": "CGLS"},
    },
    "inpainting": {
        "label": "inpainting 25% holes",
        "overrides": ["task=inpainting", "task.mask=boxes", "task.hole_ratio=0.25"],
        "baselines": {"masked": "masked input", "biharmonic": "biharmonic", "tv": "TV-PDHG"},
    },
}
# ES-WMV watches the vanilla DIP run (one run gives both rows): the windowed-variance minimum over the run is the
# detected step; the run is not stopped so that the table also has DIP's own best and final PSNR.
ES = [
    "callbacks=es_wmv",
    "~callbacks.progress_bar",
    "~callbacks.images",
    "callbacks.early_stopping.stop_training=false",
]
METHODS = {
    "dip": ("vanilla DIP", ["method=vanilla", *ES]),
    "tv_dip": ("TV-DIP", ["method=tv"]),
    "self_guided": ("Self-Guided DIP", ["method=self_guided"]),
    "aseqdip": ("aSeqDIP", ["method=aseqdip"]),
    "deep_decoder": ("deep decoder", ["method=deep_decoder"]),
}
# Steps. cpu: reduced (Self-Guided costs K = 4 forward passes a step, aSeqDIP's lr is 10-100× smaller than DIP's).
# paper: the methods' own schedules; aSeqDIP / Self-Guided use their reference presets on MRI and CT.
STEPS = {
    "cpu": {"dip": 300, "tv_dip": 300, "self_guided": 200, "aseqdip": 1000, "deep_decoder": 300},
    "paper": {"dip": 5000, "tv_dip": 5000, "self_guided": 3000, "aseqdip": 4000, "deep_decoder": 5000},
}
# Diagnostic variants (extra runs, rows marked "diagnosis"): the settings suspected of the MRI shortfall.
DIAGNOSTICS = {
    "mri": {
        "aseqdip_mse": (
            "aSeqDIP with squared (mean) terms, loss=mse, instead of the MRI script's unsquared norms",
            ["method=aseqdip", "method.loss=mse"],
        ),
    },
}
PRESETS = {("aseqdip", "mri"), ("aseqdip", "ct"), ("self_guided", "mri"), ("self_guided", "ct")}
# The targets (checked on whatever protocol ran): (task, method, baseline or method, margin in dB).
TARGETS = [
    ("mri", "aseqdip", "cg_sense", 2.0),
    ("mri", "aseqdip", "l1_wavelet", 0.0),
    ("ct", "tv_dip", "tv", 0.0),
    ("ct", "aseqdip", "fbp", 8.0),
]
# Relations the tutorial states in its text (Sec. IV): aSeqDIP and Self-Guided DIP outperform the other DIP methods.
RELATIONS = [("aseqdip", "dip"), ("self_guided", "dip"), ("tv_dip", "dip")]


# What was checked about the shortfalls (one measurement each, MRI 64², the cpu protocol's aSeqDIP unless stated:
# python train.py task=mri task.size=64 method=aseqdip trainer.max_steps=N [change]).
DIAGNOSES = [
    "MRI, steps: aSeqDIP at the script's lr 1e-4 is still rising at the cpu step count: 24.93 dB at 600 steps, 25.61 "
    "at 1000, best 25.95 at step 1635, 25.79 at 2000 (CG-SENSE 24.52, L1-wavelet 24.21): on this simulation its peak "
    "is ~1.4 dB above CG-SENSE, short of the +2 dB target even when run to its peak. lr 1e-3: 25.49 dB at 600 steps "
    "(faster, same trend). The reference runs 60 000 steps at lr 1e-4.",
    "MRI, loss reduction: with the denoising script's squared (mean) terms (method.loss=mse) aSeqDIP gains ~1.6 dB at "
    "600 steps (26.53 vs 24.93; row 'diagnosis' above at the table's step count). With unsquared norms (the MRI "
    "script) each term's gradient has a fixed magnitude ((f−z)/||f−z||, A^H r/||r||), so the autoencoding pull stays "
    "as strong as the data pull however close f is to z; squared terms let the data term lead while its residual is "
    "large. Adam's invariance to a constant loss factor does not cover this change of form. Kept as the script has it "
    "(not a discrepancy).",
    "MRI, k-space scaling: the script scales the target k-space so that the fully sampled image has the norm of the "
    "initial network output (it needs the ground truth; ours: zero-filled maximum 1). At 64² ||f(z₀)|| = 8.1 and "
    "||x|| = 16.7 on our scale, a factor ~2. The script's autoencoding term compares z in raw k-space units (its new "
    "input divides the prediction by the scale factor) with f(z) in scaled units: unless that factor is ~1 its "
    "λ||f(z) − z|| acts as a shrinkage of f(z), not an autoencoding term. Not reproducible without its data; not "
    "changed.",
    "MRI, input and network: z₀ = the zero-filled image and MediumUNet(2, 2) with normal(0, 0.02) init, as the script "
    "(conf/method_network/aseqdip_mri.yaml); no discrepancy. PSNR: the script max-normalises |f(z)| before its PSNR; "
    "ours compares at the data's scale (fastMRI convention); the two conventions differ by a global scale of |f(z)|.",
    "MRI/CT, data: the built-in Shepp-Logan phantom is piecewise constant, TV's ideal image: TV-SENSE / TV-PDHG are "
    "far above every other method here, unlike on the papers' fastMRI knee / AAPM slices. On a real 8-coil brain slice "
    "(issue 18) aSeqDIP (skip net, 1500 steps) reached 28.50 dB vs CG-SENSE 29.62, still rising.",
    "CT, TV-DIP vs TV-PDHG: TV-DIP has dival's lr 1e-3 (10× below vanilla DIP's) and runs 300 steps at the cpu scale "
    "(dival: thousands), so it is far from its peak (best at the last step, below vanilla DIP); on a noiseless "
    "piecewise-constant phantom converged TV-PDHG is near exact, so TV-DIP ≥ TV-PDHG is not expected at this scale.",
    "Self-Guided DIP: lr 3e-4 and 200 steps at the cpu scale (K = 4 forward passes a step); its best is at the last "
    "step on every task, i.e. the cpu schedule, not the method, decides its rows; on CT it has the skip network "
    "(its MediumUNet setting is the self_guided_ct preset, reference_presets table).",
    "Inpainting, aSeqDIP: ran with the method's denoising defaults (lr 1e-4) and restored the observed pixels in each "
    "new input; its inpainting script (Aseq_DIP_inpainting.py) uses lr 3e-4 and the raw output as the new input: "
    "conf/method_task/aseqdip_inpainting.yaml now sets those (this table's run).",
    "Vanilla DIP, TV-DIP, deep decoder: 300 steps at the cpu scale, best at (or near) the last step: not converged; "
    "ES-WMV's window (100) is a third of the run, so its detected step says little at this scale.",
]


def overrides(task: str, method: str, scale: str) -> list[str]:
    size = SIZES[scale][task]
    steps = STEPS[scale][method]
    if scale == "paper" and (method, task) in PRESETS:
        # the preset's schedule and settings, on the tutorial's data setting (size, views)
        return [f"experiment={method}_{task}", *TASKS[task]["overrides"], f"task.size={size}"]
    return [*TASKS[task]["overrides"], *METHODS[method][1], f"task.size={size}", f"trainer.max_steps={steps}"]


def protocol(scale: str) -> str:
    sizes = SIZES[scale]
    steps = ", ".join(f"{METHODS[m][0]} {s}" for m, s in STEPS[scale].items())
    text = (
        f"MRI: built-in 15-coil simulation (Shepp-Logan with smooth phase, ESPIRiT maps), {sizes['mri']}², 4× random "
        f"column mask with 8% centre; CT: Shepp-Logan {sizes['ct']}², 18 equispaced of 180 views, noiseless, "
        f"||A|| = 1; inpainting: 'chelsea' {sizes['inpainting']}² RGB, random boxes covering 25%. Seed 0, one image "
        f"per task. Steps: {steps}"
    )
    if scale == "cpu":
        return text + (
            ". Reduced from the paper scale (320² / 256² / 256², thousands of steps, aSeqDIP's 20 000–60 000): "
            "sizes and steps; each method otherwise at its defaults (conf/method, conf/method_task, the U-Nets of "
            "conf/method_network)."
        )
    return text + "; aSeqDIP and Self-Guided DIP on MRI/CT: experiment=<method>_<task> (their reference schedules)."


def ours(metrics: dict, key: str = "best_psnr"):
    value = metrics.get(key)
    return None if value is None else float(value)


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="a subset of the tasks")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="a subset of methods")
    args = p.parse_args(argv)
    common.setup(args)
    start = time.time()
    tasks, methods = args.tasks, args.methods
    table = common.Table(
        NAME,
        "Tutorial Figure 5: untrained methods vs classical baselines (MRI, CT, inpainting)",
        "Alkhouri et al., 'Understanding Untrained Deep Models for Inverse Problems' (seed 002), Fig. 5 and Sec. IV "
        "(settings from aSeqDIP's Fig. 5); reference settings github.com/sjames40/Aseq_DIP, Self-Guided-DIP",
        protocol(args.scale),
    )
    results: dict[str, dict] = {}
    for task in tasks:
        results[task] = {}
        for method in methods:
            output_dir = common.run_dir(args, NAME, task, method)
            results[task][method] = common.fit(overrides(task, method, args.scale), output_dir, args, reuse=True)
    for task in tasks:
        for variant, (_, extra) in DIAGNOSTICS.get(task, {}).items():
            if "aseqdip" in methods:
                steps = f"trainer.max_steps={STEPS[args.scale]['aseqdip']}"
                run = [*TASKS[task]["overrides"], *extra, f"task.size={SIZES[args.scale][task]}", steps]
                results[task][variant] = common.fit(run, common.run_dir(args, NAME, task, variant), args, reuse=True)
    table.data = {"runs": results, "overrides": {t: {m: overrides(t, m, args.scale) for m in methods} for t in tasks}}

    for task in tasks:
        spec, runs = TASKS[task], results[task]
        label = spec["label"]
        first = next(iter(runs.values()))
        for key, name in spec["baselines"].items():
            table.add(f"{label}: {name} (converged baseline)", None, ours(first, f"baseline_{key}_psnr"), "baseline")
        for method in methods:
            name, m = METHODS[method][0], runs[method]
            table.add(
                f"{label}: {name} best PSNR",
                None,
                ours(m),
                f"final {common.number(ours(m, 'final_psnr'))} dB after {m.get('steps')} steps",
            )
            if method == "dip":
                table.add(
                    f"{label}: DIP + ES-WMV at the detected step",
                    None,
                    ours(m, "es_psnr"),
                    f"detected step {m.get('es_step')}; gap to DIP's best {common.number(m.get('es_gap'))} dB",
                )
        for variant, (description, _) in DIAGNOSTICS.get(task, {}).items():
            if variant in runs:
                m = runs[variant]
                table.add(
                    f"{label}: diagnosis: {description}, best PSNR",
                    None,
                    ours(m),
                    f"final {common.number(ours(m, 'final_psnr'))} dB after {m.get('steps')} steps; "
                    f"vs aSeqDIP as configured {common.number(_diff(ours(m), ours(runs['aseqdip'])))} dB",
                )
        for a, b in RELATIONS:
            if a not in runs or b not in runs:
                continue
            diff = _diff(ours(runs[a]), ours(runs[b]))
            verdict = "–" if diff is None else ("holds" if diff >= 0 else "does not hold")
            table.add(f"{label}: {METHODS[a][0]} − {METHODS[b][0]} (tutorial: > 0)", None, diff, verdict)
    for task, method, other, margin in TARGETS:
        if task not in results or method not in results[task] or (other in METHODS and other not in results[task]):
            continue
        runs, label = results[task], TASKS[task]["label"]
        if other in METHODS:
            reference, other_name = ours(runs[other]), METHODS[other][0]
        else:
            reference, other_name = ours(runs[method], f"baseline_{other}_psnr"), TASKS[task]["baselines"][other]
        diff = _diff(ours(runs[method]), reference)
        verdict = "–" if diff is None else ("target met" if diff >= margin else "target NOT met")
        table.add(f"{label}: {METHODS[method][0]} best − {other_name} (issue target ≥ {margin:g})", None, diff, verdict)
    table.notes += [
        "Paper column: the tutorial prints its Figure 5 PSNRs inside the image (not in the text we have), on "
        "fastMRI knee / AAPM / CBSD68 data we do not have; only relations are compared.",
        "Best PSNR = the maximum over all steps against the ground truth (an oracle, as the tutorial's figures); "
        "DIP + ES-WMV is the PSNR at the step ES-WMV detects without the ground truth.",
        *DIAGNOSES,
    ]
    # the runs' own time, also when the table is rebuilt from finished runs
    table.write(
        args,
        max(time.time() - start, sum(m.get("wall_time_s", 0.0) for runs in results.values() for m in runs.values())),
    )


def _diff(a, b):
    return None if a is None or b is None else a - b


if __name__ == "__main__":
    main()

"""Tune the MRI task's classical baselines on a tuning image that is not the test image, against ground truth.

    python -m experiments.tune_mri_baselines                 # 128 px, CPU, a few minutes
    python -m experiments.tune_mri_baselines --size 320

Grid-searches the L1-wavelet SENSE weight (``task.l1_weight``) and CG-SENSE's early-stopped iteration count
(``task.cg_iterations``) by PSNR on the TUNING image (a built-in image other than the task's test image, the
Shepp-Logan phantom), everything else at the task's defaults; reports the same grid on the test image, whose best
values are the oracle (chosen on the test image itself, as papers choose DIP's best iterate). The chosen values go
into conf/task/mri.yaml by hand. Writes experiments/results/mri_baseline_tuning.{json,md}.

The tuning image is simulated with its true coil maps (``task.maps=given``): ESPIRiT maps estimated from the
simulated acquisition of a built-in photograph (an object filling the field of view) are unreliable, and CG-SENSE on
them falls below the zero-filled image, so a grid on them would tune against a broken model. The test image keeps
the task's default (ESPIRiT) maps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from untrained.baselines.linear import cg_sense
from untrained.baselines.sparse import l1_wavelet_sense
from untrained.run import compose
from untrained.tasks.mri import mri, to_channels

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
TUNING_IMAGE = "camera"
L1_WEIGHTS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
CG_ITERATIONS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30)


def build(size: int, overrides: list[str]):
    """The MRI task at the composed defaults (+ overrides), without spending time on its own baselines."""
    cfg = compose(["task=mri", f"task.size={size}", "task.cg_iterations=1", "task.l1_iterations=1", *overrides])
    options = OmegaConf.to_container(cfg.task, resolve=True)
    options.pop("_target_"), options.pop("name")
    return mri(**options), options


def grid(problem, options: dict) -> dict:
    """PSNR / fastMRI SSIM of each grid point (and FISTA's iterations) on one problem."""
    operator, y, zero_filled = problem.operator, problem.y, problem.to_domain(problem.init)

    def scores(image: torch.Tensor) -> dict:
        network_space = to_channels(image)
        extra = problem.extra_metrics(network_space)
        return {"psnr": float(problem.psnr(network_space)), "ssim_fastmri": float(extra["ssim_fastmri"])}

    l1 = []
    for weight in L1_WEIGHTS:
        start = time.perf_counter()
        image, iterations = l1_wavelet_sense(
            operator,
            y,
            zero_filled,
            weight,
            options["l1_iterations_max"],
            options["l1_tolerance"],
            options["wavelet"],
            options["wavelet_levels"],
        )
        l1.append(
            {"l1_weight": weight, "iterations": iterations, "seconds": time.perf_counter() - start, **scores(image)}
        )
    cg = [{"cg_iterations": n, **scores(cg_sense(operator, zero_filled, n))} for n in CG_ITERATIONS]
    return {"zero_filled": scores(zero_filled), "l1_wavelet": l1, "cg_sense": cg}


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda row: row["psnr"])


def markdown(result: dict) -> str:
    tuning, test = result["tuning"], result["test"]
    lines = [
        "# MRI baseline tuning (`python -m experiments.tune_mri_baselines`)",
        "",
        f"Size {result['size']}², task defaults otherwise. Tuning image: `{result['tuning_image']}` "
        f"(maps=given); test image: `{result['test_image']}` (maps={result['test_maps']}). PSNR in dB on the "
        "magnitude inside the coil support; SSIM is fastMRI's (7×7 uniform window).",
        "",
        f"Zero-filled: tuning {tuning['zero_filled']['psnr']:.2f} dB, test {test['zero_filled']['psnr']:.2f} dB.",
        "",
        "| L1-wavelet λ | tuning PSNR | tuning SSIM | test PSNR | test SSIM | FISTA iterations (test) |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in zip(tuning["l1_wavelet"], test["l1_wavelet"]):
        lines.append(
            f"| {a['l1_weight']:g} | {a['psnr']:.2f} | {a['ssim_fastmri']:.4f} | {b['psnr']:.2f} | "
            f"{b['ssim_fastmri']:.4f} | {b['iterations']} |"
        )
    lines += [
        "",
        "| CG-SENSE iterations | tuning PSNR | tuning SSIM | test PSNR | test SSIM |",
        "|---|---|---|---|---|",
    ]
    for a, b in zip(tuning["cg_sense"], test["cg_sense"]):
        lines.append(
            f"| {a['cg_iterations']} | {a['psnr']:.2f} | {a['ssim_fastmri']:.4f} | {b['psnr']:.2f} | "
            f"{b['ssim_fastmri']:.4f} |"
        )
    chosen, oracle = result["chosen"], result["oracle"]
    lines += [
        "",
        f"Chosen on the tuning image: l1_weight = {chosen['l1_weight']:g} (test {chosen['l1_test_psnr']:.2f} dB), "
        f"cg_iterations = {chosen['cg_iterations']} (test {chosen['cg_test_psnr']:.2f} dB).",
        f"Oracle on the test image: l1_weight = {oracle['l1_weight']:g} ({oracle['l1_psnr']:.2f} dB), "
        f"cg_iterations = {oracle['cg_iterations']} ({oracle['cg_psnr']:.2f} dB).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--max-iterations", type=int, default=200, help="FISTA's maximum iterations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tuning_problem, options = build(args.size, [f"task.image={TUNING_IMAGE}", "task.maps=given"])
    test_problem, test_options = build(args.size, [])
    options["l1_iterations_max"] = args.max_iterations
    tuning, test = grid(tuning_problem, options), grid(test_problem, options)
    l1_index = max(range(len(L1_WEIGHTS)), key=lambda i: tuning["l1_wavelet"][i]["psnr"])
    cg_index = max(range(len(CG_ITERATIONS)), key=lambda i: tuning["cg_sense"][i]["psnr"])
    l1_oracle, cg_oracle = best(test["l1_wavelet"]), best(test["cg_sense"])
    result = {
        "size": args.size,
        "tuning_image": TUNING_IMAGE,
        "test_image": test_options["image"],
        "test_maps": test_options["maps"],
        "fista_max_iterations": args.max_iterations,
        "l1_tolerance": options["l1_tolerance"],
        "tuning": tuning,
        "test": test,
        "chosen": {
            "l1_weight": L1_WEIGHTS[l1_index],
            "l1_test_psnr": test["l1_wavelet"][l1_index]["psnr"],
            "cg_iterations": CG_ITERATIONS[cg_index],
            "cg_test_psnr": test["cg_sense"][cg_index]["psnr"],
        },
        "oracle": {
            "l1_weight": l1_oracle["l1_weight"],
            "l1_psnr": l1_oracle["psnr"],
            "cg_iterations": cg_oracle["cg_iterations"],
            "cg_psnr": cg_oracle["psnr"],
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mri_baseline_tuning.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "mri_baseline_tuning.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

"""aSeqDIP on MRI with the DIP skip net against the U-Net of its reference (issue 17).

    python -m experiments.unet_vs_skip_mri                              # 96², 3000 steps (2-core CPU: ~7 min)
    python -m experiments.unet_vs_skip_mri --size 320 --steps 6000      # the task's size (a GPU)

The embedded simulation of ``task=mri`` (15 coils, 4× random columns, 8% centre, ESPIRiT maps), ``method=aseqdip``
with its MRI defaults (conf/method_task/aseqdip_mri.yaml), once with ``network=skip`` (+ conf/network_task/
skip_mri.yaml) and once with the method's default network on MRI, ``unet_medium`` (conf/method_network/). Same seed,
same measurement. Writes experiments/results/unet_vs_skip_mri.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.mri_embedded import KEYS  # the same metrics as the embedded-MRI experiment
from untrained.run import compose
from untrained.train import train

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {"skip": ["network=skip"], "unet_medium (aSeqDIP default)": []}


def fmt(value, digits=2):
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "unet_vs_skip_mri.json").write_text(json.dumps(result, indent=2, default=str))
    rows = result["rows"]
    lines = [
        f"# aSeqDIP on MRI: skip net vs U-Net ({result['size']}², {result['steps']} steps, seed {result['seed']})",
        "",
        f"Embedded simulation, {result['coils']} coils, {result['acceleration']}× random columns; command: "
        f"`{result['command']}`; machine: {result['machine']['cpu']}, {result['machine']['threads']} threads.",
        "",
        "| network | parameters | best PSNR | best SSIM | best step | final PSNR | final SSIM | steps | s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['parameters']:,} | {fmt(r['best_psnr'])} | {fmt(r['best_ssim'], 3)} | "
            f"{r['best_step']} | {fmt(r['final_psnr'])} | {fmt(r['final_ssim'], 3)} | {r['steps']} | "
            f"{fmt(r['seconds_per_step'], 3)} |"
        )
    first = rows[0]
    lines += [
        "",
        f"Baselines: zero-filled {fmt(first['baseline_zero_filled_psnr'])} dB / "
        f"{fmt(first['baseline_zero_filled_ssim'], 3)}, CG-SENSE {fmt(first['baseline_cg_sense_psnr'])} dB / "
        f"{fmt(first['baseline_cg_sense_ssim'], 3)}.",
    ]
    (out / "unet_vs_skip_mri.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides (both runs)")
    args = parser.parse_args(argv)
    result = {
        "command": "python -m experiments.unet_vs_skip_mri " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "steps": args.steps,
        "seed": args.seed,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": [],
    }
    for label, network in NETWORKS.items():
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [
                "task=mri",
                "method=aseqdip",
                f"task.size={args.size}",
                f"trainer.max_steps={args.steps}",
                f"seed={args.seed}",
                "logger=none",
                "callbacks=none",
                "trainer.enable_progress_bar=false",
                f"paths.output_dir={tmp}",
                *network,
                *args.override,
            ]
            cfg = compose(overrides)
            metrics = train(cfg)
            parameters = metrics.get("network_parameters")
            if parameters is None:
                from hydra.utils import instantiate

                net = instantiate(cfg.network, in_channels=2, out_channels=2)
                parameters = sum(p.numel() for p in net.parameters())
            result.update(coils=cfg.task.coils, acceleration=cfg.task.acceleration)
            result["rows"].append(
                {
                    "network": label,
                    "network_config": OmegaConf.to_container(cfg.network, resolve=True),
                    "overrides": overrides,
                    "parameters": parameters,
                    **{key: metrics.get(key) for key in KEYS},
                }
            )
        write(result, Path(args.out))  # after each run: a run cut short keeps the finished row
    print((Path(args.out) / "unet_vs_skip_mri.md").read_text())
    return result


if __name__ == "__main__":
    main()

"""Run the whole reproduction suite, one command after the other, at one scale.

    python -m experiments.reproduce --scale cpu                  # every CPU table (each command's own protocol)
    python -m experiments.reproduce --scale paper --device gpu   # the papers' sizes and schedules, on a GPU node
    python -m experiments.reproduce --only early_stopping robustness --scale cpu

Each command writes experiments/reproduce/results/<command>_<scale>.{md,json}; docs/reproduce.md explains them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# The order: the DIP paper's denoising table, the tutorial's Fig. 5 and Fig. 6, ES-DIP, the deep decoder,
# the two methods' own MRI/CT settings, then held-out stopping and uncertainty maps against them.
COMMANDS = (
    "dip_denoising",
    "tutorial_fig5",
    "robustness",
    "early_stopping",
    "deep_decoder_denoising",
    "reference_presets",
    "stopping_uncertainty",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--only", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    failed = []
    for name in args.only:
        command = [
            sys.executable,
            "-m",
            f"experiments.reproduce.{name}",
            "--scale",
            args.scale,
            "--device",
            args.device,
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        start = time.perf_counter()
        print(f"== {' '.join(command[1:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"== {name}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    if failed:
        sys.exit(f"Failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

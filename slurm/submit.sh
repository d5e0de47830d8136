#!/usr/bin/env bash
# Submit a sweep file (one line of Hydra overrides per run) as one job array of slurm/array.sbatch:
#   slurm/submit.sh experiments/sweeps/denoising_methods.txt [overrides for every run] 
# sbatch options go in SBATCH_* variables, e.g. SBATCH_PARTITION=gpu SBATCH_TIMELIMIT=4:00:00; at most
# PARALLEL (default 64) tasks run at once. Prints the array job id; results: python -m untrained.report <sweep dir>.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_file=$1
runs=$(grep -cEv '^[[:space:]]*(#|$)' "$sweep_file")
mkdir -p outputs/slurm
sbatch --parsable --array="0-$((runs - 1))%${PARALLEL:-64}" slurm/array.sbatch "$@"

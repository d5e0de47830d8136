#!/usr/bin/env bash
# The survey's MRI comparison (seed 002, Fig. 5, MRI row: 15 coils, 320x320, 4x Cartesian undersampling;
# settings from aSeqDIP, its ref. [8]) on simulated multi-coil k-space of built-in images (task=mri, no
# download), 4x and 8x: vanilla DIP, TV-DIP, Self-Guided DIP, aSeqDIP, 2 seeds. Extra arguments go to Hydra:
#   experiments/sweeps/mri_methods.sh hydra/launcher=slurm hydra.launcher.gpus_per_node=1 trainer=gpu
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP_DIR=${SWEEP_DIR:-outputs/sweeps/mri_methods}
python train.py -m hydra.sweep.dir="$SWEEP_DIR" task=mri task.image=shepp_logan_phantom,camera \
  task.acceleration=4,8 seed=0,1 method=vanilla,tv,self_guided,aseqdip trainer.max_steps=3000 "$@" || true
python -m untrained.report "$SWEEP_DIR"

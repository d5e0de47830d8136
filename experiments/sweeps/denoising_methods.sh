#!/usr/bin/env bash
# The survey's denoising comparison (seed 002, "Understanding Untrained Deep Models for Inverse Problems",
# Fig. 6: PSNR vs iteration of DIP-based methods up to 10000 iterations, ES-DIP's detected stop marked;
# Fig. 5: reconstructions with their PSNR) on the built-in images: vanilla DIP, TV-DIP, Self-Guided DIP,
# aSeqDIP and the Deep Decoder, Gaussian noise sigma = 25, 3 seeds, ES-WMV reporting its stop (es_psnr)
# without stopping the run. Extra arguments go to Hydra, e.g. hydra/launcher=slurm trainer=gpu:
#   experiments/sweeps/denoising_methods.sh hydra/launcher=slurm hydra.launcher.gpus_per_node=1 trainer=gpu
# Then: outputs/sweeps/denoising_methods/report/{summary.md,summary.csv,psnr_curves.png,reconstructions.png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP_DIR=${SWEEP_DIR:-outputs/sweeps/denoising_methods}
python train.py -m hydra.sweep.dir="$SWEEP_DIR" task=denoising task.sigma=25 \
  task.image=astronaut,camera,coffee,chelsea seed=0,1,2 \
  method=vanilla,tv,self_guided,aseqdip,deep_decoder \
  callbacks=es_wmv callbacks.early_stopping.stop_training=false trainer.max_steps=10000 "$@" || true  # failed runs are in the report
python -m untrained.report "$SWEEP_DIR"

#!/usr/bin/env bash
# The GPU measurements of issue 8, in one go on a GPU node (each stage time-limited, logs in $RESULTS):
#
#   bash benchmarks/gpu_node.sh [stage ...]     stages: tests denoising mri quality (default: all)
#
# tests      tests/test_gpu.py (every task and the capturable methods on CUDA, CUDA graph vs eager fp32)
# denoising  256² DIP denoising, skip net: plain loop vs framework (fp32 eager, compiled, + CUDA graph);
#            batched fits of 128² images at B = 1, 4, 16 (reconstructions per GPU-hour)
# mri        fastMRI-size MRI (320², 15 coils), aSeqDIP, skip net: the same variants
# quality    best PSNR of each fast-path variant against fp32 eager on the same seed (256², 1500 steps)
set -uo pipefail
cd "$(dirname "$0")/.."
TAIL_LINES=25
# shellcheck source=benchmarks/gpu_lib.sh
source benchmarks/gpu_lib.sh  # after the cd: from the repository root
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests denoising mri quality)
for stage in "${stages[@]}"; do
    case $stage in
        tests) run 120 gpu-tests python -m pytest tests/test_gpu.py -q -p no:cacheprovider --timeout 120 ;;
        denoising) run 320 gpu-denoising python -m benchmarks --tasks denoising --networks skip --devices gpu --fast \
            --steps 50 --warmup 10 --rounds 2 --batch-sizes 1,4,16 --batch-image-size 128 --name gpu-denoising-skip --out "$RESULTS" ;;
        mri) run 240 gpu-mri python -m benchmarks --tasks mri --networks skip --method aseqdip --devices gpu --fast \
            --steps 50 --warmup 10 --rounds 2 --name gpu-mri-aseqdip-skip --out "$RESULTS" ;;
        quality) run 450 gpu-quality python -m benchmarks.fast_path_quality --size 256 --steps 1500 --out "$RESULTS" ;;
        *) echo "unknown stage $stage (tests, denoising, mri, quality)"; exit 2 ;;
    esac
done

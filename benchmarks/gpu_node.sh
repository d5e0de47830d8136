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
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests denoising mri quality)

run() {  # run <seconds> <log name> <command...>
    local limit=$1 name=$2
    shift 2
    echo "=== $name: $* (limit ${limit} s)"
    local start=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    tail -n 25 "$RESULTS/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
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

#!/usr/bin/env bash
# The GPU measurements of issue 21 in one go on one GPU, at most ~8 minutes (each stage time-limited; logs and
# results in $RESULTS, default benchmarks/results):
#
#   bash benchmarks/gpu_issue21.sh [stage ...]   stages: batched quality overhead ct tests summary (default: all)
#
# batched   128² denoising, skip net: reconstructions/hour (3000-step fits) at B = 1, 16, 32, 64, vmapped with the
#           step's CUDA graph, fp32 (graph) and bf16 weights (graph_bf16)      → gpu-batched-bf16-128.{md,json}
# quality   each member's best PSNR, 128², 3000 steps, B = 8: fp32 twice (the spread) and bf16
#                                                                              → gpu-batched-quality-128.{md,json}
# overhead  256² denoising: framework with every switch on against the bare fast loop
#                                                                              → gpu-overhead-denoising-256.{md,json}
# ct        CT 256², 18 views: steps/s of task.impl=torch (fast path, CUDA graph) against the plain loop with
#           astra_cuda, and the operators alone   → gpu-ct-torch, gpu-ct-astra-cuda, gpu-ct-operator.{md,json}
# tests     tests/test_gpu.py (astra_cuda and the torch ray transform included)  → gpu-issue21-tests.log
# summary   the three targets, read off the files above                         → gpu-issue21.{md,json}
set -uo pipefail
cd "$(dirname "$0")/.."
TAIL_LINES=15
# shellcheck source=benchmarks/gpu_lib.sh
source benchmarks/gpu_lib.sh  # after the cd: from the repository root
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(batched quality overhead ct tests summary)
# The CT task builds its classical baselines first; their iterations are not what is timed here.
CT_QUICK_BASELINES=(task.tv_max_iterations=0 task.sirt_iterations=1 task.cgls_iterations=1)
python -c "import astra; print('astra', astra.__version__, 'cuda', astra.use_cuda())" || echo "no astra-toolbox: the astra_cuda figures stay open"
for stage in "${stages[@]}"; do
    case $stage in
        batched) run 90 gpu-batched python -m benchmarks --batched-only --tasks denoising --networks skip --devices gpu \
            --steps 30 --warmup 10 --rounds 1 --batch-sizes 1,16,32,64 --batch-modes graph graph_bf16 \
            --batch-image-size 128 --name gpu-batched-bf16-128 --out "$RESULTS" task.bm3d=false ;;
        quality) run 90 gpu-quality python -m benchmarks.batched_quality --size 128 --steps 3000 --batch 8 \
            --name gpu-batched-quality-128 --out "$RESULTS" ;;
        overhead) run 60 gpu-overhead python -m benchmarks --tasks denoising --networks skip --devices gpu --fast \
            --fast-variants untrained_fast --steps 100 --warmup 20 --rounds 2 --batch-sizes "" \
            --name gpu-overhead-denoising-256 --out "$RESULTS" task.bm3d=false ;;
        ct)
            run 60 gpu-ct-torch python -m benchmarks --tasks ct --networks skip --devices gpu --fast \
                --fast-variants untrained_fast --steps 50 --warmup 10 --rounds 2 --batch-sizes "" \
                --name gpu-ct-torch --out "$RESULTS" task.impl=torch "${CT_QUICK_BASELINES[@]}"
            run 50 gpu-ct-astra python -m benchmarks --tasks ct --networks skip --devices gpu \
                --steps 50 --warmup 10 --rounds 2 --batch-sizes "" \
                --name gpu-ct-astra-cuda --out "$RESULTS" task.impl=astra_cuda "${CT_QUICK_BASELINES[@]}"
            run 30 gpu-ct-operator python -m benchmarks.operators_ct --sizes 256 --device cuda \
                --impls astra_cuda,torch --name gpu-ct-operator --out "$RESULTS" ;;
        tests) run 80 gpu-issue21-tests python -m pytest tests/test_gpu.py -q -p no:cacheprovider --timeout 70 ;;
        summary) run 10 gpu-issue21-summary python -m benchmarks.issue21_summary --results "$RESULTS" ;;
        *) echo "unknown stage $stage (batched quality overhead ct tests summary)"; exit 2 ;;
    esac
done

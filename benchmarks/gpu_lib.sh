# Shared by the GPU-node scripts (gpu_node.sh, gpu_issue21.sh): results folder, quiet W&B, and `run`, which runs
# one stage under a time limit, keeps its log and shows its tail.
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
TAIL_LINES=${TAIL_LINES:-20}

run() {  # run <seconds> <log name> <command...>
    local limit=$1 name=$2
    shift 2
    echo "=== $name: $* (limit ${limit} s)"
    local start=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    tail -n "$TAIL_LINES" "$RESULTS/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

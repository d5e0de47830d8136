# Sourced by each array task's batch script (the sweep launcher's `setup`, conf/hydra/launcher/slurm.yaml).
#
# A run answers SIGTERM/SIGUSR1/SIGUSR2 itself once train.py has started (src/untrained/callbacks/preemption.py):
# it saves, requeues the task and exits. A signal that arrives earlier, while Python is still importing, kills the
# process with no result written, and SLURM would end the task FAILED. This guard, run when the batch script exits,
# requeues such a task: the run ended with a signal's status (>= 128) and the job is still RUNNING. SLURM's own kill
# (scancel, scontrol requeue, preemption, the time limit) leaves the job COMPLETING: SLURM then requeues or ends it
# as it decided, and a cancelled task stays cancelled. At most UNTRAINED_MAX_REQUEUES (default 10) restarts.
untrained_requeue_guard() {
  local status=$? job state
  job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
  job=${job:-${SLURM_JOB_ID:-}}
  [[ -n $job && $status -ge 128 ]] || return 0
  if ((${SLURM_RESTART_COUNT:-0} >= ${UNTRAINED_MAX_REQUEUES:-10})); then
    echo "[requeue_guard] exit status $status after ${SLURM_RESTART_COUNT} restarts: not requeueing $job again" >&2
    return 0
  fi
  state=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*')
  [[ $state == JobState=RUNNING ]] || return 0
  echo "[requeue_guard] the run ended with status $status (a signal) and no result: requeueing $job" >&2
  scontrol requeue "$job"
}
trap untrained_requeue_guard EXIT

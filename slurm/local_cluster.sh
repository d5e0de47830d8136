#!/usr/bin/env bash
# A single-node SLURM on this machine, from Debian's packages, for trying and testing sweeps:
#
#   slurm/local_cluster.sh start    # apt-get install (first time), then munged, MariaDB, slurmdbd, slurmctld, slurmd
#   slurm/local_cluster.sh status   # sinfo + squeue
#   slurm/local_cluster.sh stop     # stops the daemons this script started (by their pid files)
#
# Needs root (apt-get, daemons). The node gets this machine's CPUs and most of its memory; one partition
# `debug` (default). Accounting goes through slurmdbd + MariaDB so that `sacct` works (submitit follows its
# jobs with sacct). Configuration: /etc/slurm/{slurm,slurmdbd}.conf (where the clients look for it);
# state, logs, pid files and the database under $UNTRAINED_SLURM_STATE (default /var/tmp/untrained-slurm).
set -euo pipefail

STATE=${UNTRAINED_SLURM_STATE:-/var/tmp/untrained-slurm}
DB_PORT=${UNTRAINED_SLURM_DB_PORT:-3306}
CLUSTER=untrained
NODE=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

say() { echo "[local_cluster] $*"; }
die() { echo "[local_cluster] ERROR: $*" >&2; exit 1; }

wait_for() {  # wait_for <seconds> <description> <command...>
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what did not come up within ${seconds}s (logs: $STATE/log)"
}

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_configs() {
  local cpus memory_mb
  cpus=$(nproc)
  memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
  mkdir -p /etc/slurm "$STATE"/{ctld,slurmd,log,run,mysql}
  cat >/etc/slurm/slurm.conf <<EOF
# Written by slurm/local_cluster.sh: a single-node development cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups (containers, CI machines): track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Seconds between SIGTERM and SIGKILL (scancel, scontrol requeue, preemption): time to write a checkpoint.
KillWait=30
SchedulerParameters=batch_sched_delay=1,sched_min_interval=100000
DefMemPerCPU=$((memory_mb / cpus))
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/slurmdbd.conf <<EOF
# Written by slurm/local_cluster.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

start_munge() {
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
  mkdir -p /run/munge && chown munge:munge /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
  fi
  wait_for 10 munged sh -c "munge -n | unmunge"
}

start_database() {
  local socket=$STATE/run/mysqld.sock
  if [[ ! -d $STATE/mysql/mysql ]]; then
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1
  fi
  chown mysql:mysql "$STATE/run"
  if [[ ! -S $socket ]] || ! mariadb --socket="$socket" -e "SELECT 1" >/dev/null 2>&1; then
    rm -f "$socket"
    nohup mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$socket" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" >/dev/null 2>&1 &
  fi
  wait_for 60 MariaDB mariadb --socket="$socket" -e "SELECT 1"
  mariadb --socket="$socket" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start() {
  [[ $EUID -eq 0 ]] || die "run as root (it installs packages and starts daemons)"
  install_packages
  write_configs
  start_munge
  start_database
  pgrep -F "$STATE/run/slurmdbd.pid" >/dev/null 2>&1 || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  pgrep -F "$STATE/run/slurmctld.pid" >/dev/null 2>&1 || slurmctld
  wait_for 60 slurmctld scontrol ping
  pgrep -F "$STATE/run/slurmd.pid" >/dev/null 2>&1 || slurmd -N "$NODE"
  wait_for 60 "node $NODE" sh -c "sinfo -h -N -n $NODE -o %T | grep -Eq 'idle|mix|alloc'"
  say "up: $(sinfo -h -o '%P %D node(s), %c CPUs, %m MB, %T')"
}

stop() {
  # Only the daemons this script started, found by their pid files.
  for daemon in slurmd slurmctld slurmdbd mariadb munged; do
    local pidfile=$STATE/run/$daemon.pid pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      say "stopped $daemon"
    fi
    rm -f "$pidfile"
  done
}

status() {
  command -v sinfo >/dev/null || die "SLURM is not installed: slurm/local_cluster.sh start"
  sinfo && squeue
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

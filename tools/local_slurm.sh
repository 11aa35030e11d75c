#!/usr/bin/env bash
# A single-node SLURM cluster on the machine it runs on, from Debian's packages, for testing `benchmark.sh paper
# --slurm` against a real scheduler (tests/test_slurm.py; .ci/run installs the packages):
#
#   apt-get install -y slurmctld slurmd slurm-client munge    # Debian 12: slurm-wlm 22.05, munge 0.5.15
#   bash tools/local_slurm.sh start [DIR] [--port P]   # munged, slurmctld, slurmd; waits for the node
#   export SLURM_CONF=DIR/slurm.conf                   # what `start` prints last: sbatch, squeue... use it
#   bash tools/local_slurm.sh stop [DIR]               # cancels every job, waits for them, stops the daemons
#
# Everything lives in DIR (default /tmp/crl-local-slurm): slurm.conf, a munge key and socket of its
# own, the daemons' state, logs and pid files; nothing under /etc is read or changed, so a real
# cluster's configuration on the same machine is left alone. One node, named localhost, with this
# machine's CPUs and no GPUs; no cgroups (proctrack/linuxproc, task/none), no accounting; jobs run
# as the user who started the cluster, which must be root (slurmd launches jobs as their owner).
# Ports: slurmctld P, slurmd P+1 (default 6817, 6818; --port for others).
# Errors: one line on stderr; exit 2 (bad input or missing packages), 1 (a daemon did not start; its
# log is named).
set -euo pipefail

die() { echo "error: $*" >&2; exit "${2:-2}"; }
cmd=${1:-}
[ $# -gt 0 ] && shift
dir=/tmp/crl-local-slurm port=6817
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--port needs a number"; port=$2; shift 2 ;;
    -*) die "unknown option '$1'" ;;
    *) dir=$1; shift ;;
  esac
done
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac

pid_of() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }
stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, then wait up to 10 s
  local pid
  pid=$(pid_of "$1") || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { echo "stopped $2 (pid $pid)"; return 0; }; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  echo "killed $2 (pid $pid): it did not stop on SIGTERM"
}

case "$cmd" in
  start)
    for p in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol; do
      command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] ||
        die "$p not found: install Debian's packages (apt-get install -y slurmctld slurmd slurm-client munge)"
    done
    export PATH=$PATH:/usr/sbin
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their owner)"
    if pid=$(pid_of "$dir/slurmctld.pid"); then die "a cluster is already running from $dir (slurmctld pid $pid)"; fi
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    chmod 700 "$dir/munge"
    # munge: a key and a socket of our own
    [ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
    chmod 400 "$dir/munge/munge.key"
    if ! pid_of "$dir/munge/munged.pid" >/dev/null; then
      munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" || die "munged did not start; see $dir/munge/munged.log" 1
    fi
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    user=$(id -un)
    cat >"$dir/slurm.conf" <<EOF
# tools/local_slurm.sh: a single-node cluster on localhost ($cpus CPUs, no GPUs), everything in $dir
ClusterName=crllocal
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/slurmctld.log" 1
    slurmd -f "$SLURM_CONF" -N localhost || die "slurmd did not start; see $dir/slurmd.log" 1
    for _ in $(seq 100); do
      state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
      case "$state" in idle|mix|alloc) break ;; esac  # exactly: a trailing * (idle*) is "not responding"
      sleep 0.2
    done
    case "$state" in
      idle|mix|alloc) ;;
      *) die "the node did not come up (state '${state:-none}'); see $dir/slurmctld.log and $dir/slurmd.log" 1 ;;
    esac
    echo "local slurm cluster up: node localhost ($cpus CPUs), partition debug, state in $dir"
    echo "export SLURM_CONF=$dir/slurm.conf" ;;
  stop)
    [ -f "$dir/slurm.conf" ] || die "no cluster in $dir (no slurm.conf)"
    export PATH=$PATH:/usr/sbin SLURM_CONF=$dir/slurm.conf
    if pid_of "$dir/slurmctld.pid" >/dev/null; then
      scancel --user "$(id -un)" 2>/dev/null || true
      # wait (up to ~30 s) until the queue is empty, so that no job's processes outlive the daemons
      for _ in $(seq 150); do
        left=$(squeue -h 2>/dev/null) || break
        [ -z "$left" ] && break
        sleep 0.2
      done
      [ -z "${left:-}" ] || echo "warning: jobs still in the queue after 30 s: $(echo "$left" | wc -l)" >&2
    fi
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    stop_pid "$dir/munge/munged.pid" munged ;;
  ""|-h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; [ -n "$cmd" ] || exit 2 ;;
  *) die "unknown command '$cmd' (start or stop)" ;;
esac

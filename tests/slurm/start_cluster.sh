#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd as
# background daemons (no systemd), every file (config, munge key and socket, state, spool, logs,
# pid files) under one folder. Installs nothing (tests/slurm/install.sh does); needs root.
#
#   tests/slurm/start_cluster.sh DIR        (or DIR from $SLURM_TEST_DIR)
#   export SLURM_CONF=DIR/slurm.conf        then sinfo, sbatch, squeue ... talk to it
#   tests/slurm/stop_cluster.sh DIR         stops the daemons again
#
# Idempotent: daemons already running from DIR are left as they are. Returns once the node is
# idle and a one-task job has run. The node is this host (`hostname -s`, address 127.0.0.1),
# with its cores and its memory less a margin, in one partition `debug`.
set -euo pipefail

DIR=${1:-${SLURM_TEST_DIR:-}}
if [ -z "$DIR" ]; then
    echo "usage: $0 DIR   (or set SLURM_TEST_DIR)" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd -P)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
CONF=$DIR/slurm.conf
SOCKET=$DIR/run/munge.socket
export SLURM_CONF=$CONF

for cmd in munged mungekey munge unmunge slurmctld slurmd sinfo srun scontrol; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "start_cluster: '$cmd' is not installed (run tests/slurm/install.sh)" >&2
        exit 3
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "start_cluster: must run as root (the daemons run as root: SlurmUser=root)" >&2
    exit 3
fi

# alive NAME: the daemon NAME started from DIR is running (its pid file names a live process
# of that name, so a recycled pid is not taken for it).
alive() {
    local pid
    pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

failed() {
    echo "start_cluster: $1; last log lines:" >&2
    local log
    for log in "$DIR"/log/*.log; do
        [ -f "$log" ] && { echo "== $log" >&2; tail -n 15 "$log" >&2; }
    done
    bash "$HERE/stop_cluster.sh" "$DIR" >&2 || true   # leave no root daemon behind
    exit 1
}

# wait_for SECONDS COMMAND...: run COMMAND every half second until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

free_port() {  # a TCP port nothing listens on now (python3: the project needs it anyway)
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
chmod 700 "$DIR/munge"   # the key
chmod 755 "$DIR/run"     # the socket: munged wants it reachable by all

if ! alive munged && ! alive slurmctld && ! alive slurmd; then
    # (Re)write the configuration when none of its daemons runs: fresh free ports, so that a
    # cluster of another checkout or a system SLURM on 6817/6818 is never in the way.
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    real_mb=$(( mem_mb - (mem_mb / 10 > 512 ? mem_mb / 10 : 512) ))  # 10 % (at least 512 MB) kept back
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
    cat >"$CONF" <<CONF
# Written by tests/slurm/start_cluster.sh: a one-node test cluster; everything lives in
# $DIR
ClusterName=conntooltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((real_mb / cpus))
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
ReturnToService=2
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    : >"$DIR/plugstack.conf"   # no SPANK plugins (not the system's /etc/slurm/plugstack.conf)
fi
host=$(sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF")

if ! alive munged; then
    [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
    chmod 600 "$DIR/munge/munge.key"
    # --force: munged refuses a socket whose parent folders are not reachable by every user,
    # as pytest's temporary folders (0700) are not; only root uses this cluster.
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        </dev/null >>"$DIR/log/munged.log" 2>&1 || failed "munged did not start"
fi
munge_ok() { munge -n -S "$SOCKET" | unmunge -S "$SOCKET"; }
wait_for 20 munge_ok || failed "munged does not answer on $SOCKET"

if ! alive slurmctld; then
    slurmctld -f "$CONF" </dev/null >>"$DIR/log/slurmctld.log" 2>&1 || failed "slurmctld did not start"
fi
wait_for 30 scontrol ping || failed "slurmctld does not answer"

if ! alive slurmd; then
    slurmd -f "$CONF" </dev/null >>"$DIR/log/slurmd.log" 2>&1 || failed "slurmd did not start"
fi
node_idle() { [ "$(sinfo -h -N -n "$host" -o %t)" = idle ]; }
wait_for 60 node_idle || failed "node $host is not idle: $(sinfo -h -N -o '%N %t %E' 2>&1)"

timeout 60 srun -N1 -n1 -t 1 -p debug true </dev/null || failed "a one-task job (srun true) did not run"
echo "SLURM test cluster up: SLURM_CONF=$CONF (node $host, partition debug)"

#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start_cluster.sh started from DIR: cancel its jobs,
# then stop slurmd, slurmctld and munged by their pid files under DIR (TERM, then KILL after
# 15 s). Touches nothing outside DIR; leaves DIR's files (logs) in place. Safe to run twice.
#
#   tests/slurm/stop_cluster.sh DIR         (or DIR from $SLURM_TEST_DIR)
set -uo pipefail

DIR=${1:-${SLURM_TEST_DIR:-}}
if [ -z "$DIR" ]; then
    echo "usage: $0 DIR   (or set SLURM_TEST_DIR)" >&2
    exit 2
fi
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd -P)
export SLURM_CONF=$DIR/slurm.conf

running() {  # process $1 exists and is not a zombie waiting to be reaped
    [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

pid_of() {  # the pid of the live daemon $1 started from DIR, or nothing
    local pid
    pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

# Jobs first, so that no job step (slurmstepd) outlives slurmd.
if pid_of slurmctld >/dev/null && command -v squeue >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null)
    if [ -n "$jobs" ]; then
        timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 20); do
            [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# stop NAME...: TERM the named daemons together, wait for them, KILL any still there after 15 s.
status=0
stop() {
    local name pid pids=() names=()
    for name in "$@"; do
        if pid=$(pid_of "$name"); then
            kill -TERM "$pid" 2>/dev/null
            pids+=("$pid")
            names+=("$name")
        else
            rm -f "$DIR/run/$name.pid"
        fi
    done
    local i deadline=$((SECONDS + 15))
    for i in "${!pids[@]}"; do
        while running "${pids[$i]}" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if running "${pids[$i]}"; then
            echo "stop_cluster: ${names[$i]} (${pids[$i]}) ignored TERM; killing it" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null
            sleep 0.5
        fi
        if pid_of "${names[$i]}" >/dev/null; then
            echo "stop_cluster: ${names[$i]} (${pids[$i]}) is still running" >&2
            status=1
        else
            rm -f "$DIR/run/${names[$i]}.pid"
        fi
    done
}
stop slurmd slurmctld   # both need munged to the end
stop munged
exit $status

#!/usr/bin/env bash
# Install what tests/slurm/start_cluster.sh needs: SLURM's controller (slurmctld), node daemon
# (slurmd), client commands (sinfo, sbatch, squeue, srun ...) and munge, from Debian's packages.
# Does nothing when they are already installed. Needs root (CI has it). Starts no service: the
# test daemons are started only by start_cluster.sh. Prints one line; apt's output only on failure.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(slurmctld slurmd sinfo sbatch squeue srun scontrol munged munge unmunge mungekey)

have_all() {
    local cmd
    for cmd in "${COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
}
version() { dpkg-query -W -f '${Version}' slurmctld 2>/dev/null || echo "?"; }

if have_all; then
    echo "slurm install: already installed (slurm $(version))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm install: needs root to apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi

start=$SECONDS
log=$(mktemp)
# Debian's packages start their services on install unless a policy-rc.d forbids it: forbid it
# for this install only (one already there is kept as it is).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
    rm -f "$log"
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "slurm install: apt-get install ${PACKAGES[*]} failed" >&2
    exit 1
fi
if ! have_all; then
    echo "slurm install: commands still missing after apt-get install ${PACKAGES[*]}" >&2
    exit 1
fi
echo "slurm install: installed slurm $(version) and munge in $((SECONDS - start)) s"

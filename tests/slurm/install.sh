#!/usr/bin/env bash
# Install what tests/slurm/start_cluster.sh needs: SLURM's controller (slurmctld), node daemon
# (slurmd), client commands (sinfo, sbatch, squeue, srun ...) and munge, from Debian's packages.
# Starts no service: the test daemons are started only by start_cluster.sh (see apt_install.sh).
set -euo pipefail
exec bash "$(dirname "$0")/../apt_install.sh" slurm "slurmctld slurmd slurm-client munge" \
    "slurmctld slurmd sinfo sbatch squeue srun scontrol munged munge unmunge mungekey"

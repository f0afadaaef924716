#!/bin/bash
# One SLURM job per participant: task N of the array runs conntool's fMRI path on the participant
# on line N of a participants list (one label per line, with or without "sub-").
#
#   mkdir -p logs
#   tail -n +2 /data/bids/participants.tsv | cut -f1 > participants.txt    # or write it by hand
#   sbatch --array=1-$(grep -c . participants.txt)%20 examples/slurm_array.sh
#
# %20 lets at most 20 participants run at once. A task that failed (exit 1, crash files in
# $WORK/<label>/crash) can be resubmitted alone, e.g. --array=7: its work folder resumes it.
# Set BIDS, OUT, WORK, PARTICIPANTS, ATLAS_DIR, CONNTOOL in the environment of sbatch (it passes them on) or
# edit the defaults below. Memory and time are a starting point: see `make bench` for the peak
# memory and wall time of each stage.
#SBATCH --job-name=conntool-fmri
#SBATCH --cpus-per-task=2
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=logs/conntool-fmri_%A_%a.out
set -euo pipefail

BIDS=${BIDS:-/data/bids}
OUT=${OUT:-/data/derivatives/conntool}
WORK=${WORK:-/scratch/${USER:-$(id -un)}/conntool-work}
PARTICIPANTS=${PARTICIPANTS:-participants.txt}
ATLAS_DIR=${ATLAS_DIR:-/data/atlases}
CONNTOOL=${CONNTOOL:-conntool}   # e.g. /path/to/conntool/.venv/bin/conntool

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "submit with sbatch --array=1-N (N = number of lines of $PARTICIPANTS)" >&2
    exit 2
fi
label=$(sed -n "${SLURM_ARRAY_TASK_ID}p" "$PARTICIPANTS" | tr -d '[:space:]')
label=${label#sub-}
if [ -z "$label" ]; then
    echo "$PARTICIPANTS has no participant on line $SLURM_ARRAY_TASK_ID" >&2
    exit 2
fi
echo "array task $SLURM_ARRAY_TASK_ID: participant $label on $(hostname)"

exec "$CONNTOOL" fmri "$BIDS" "$OUT" participant --participant-label "$label" \
    --atlas Schaefer400 --atlas-dir "$ATLAS_DIR" --pipeline fmri-default \
    --work-dir "$WORK/$label" --nprocs "${SLURM_CPUS_PER_TASK:-1}"

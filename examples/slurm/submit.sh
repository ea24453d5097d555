#!/bin/bash
# The fine-tuning study on a Slurm cluster: one preparing job, a job array for the grid,
# one report job. All jobs share one results folder (on a shared file system).
#
#   bash examples/slurm/submit.sh results/paper 16 --profile paper --target sim_bus ...
#
# 1. prepare.sbatch  pretrains once, caches the data, writes the folds and config.json
# 2. array.sbatch    N tasks; each trains its share of the runs (--shard from
#                    SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT), skipping finished ones
# 3. report.sbatch   tables, figures, REPORT.md once every task has ended (afterany); if a
#                    task died before its runs were done, the report job writes nothing,
#                    exits 4 and names how many runs are missing: resubmit
# Resubmitting the same command continues an interrupted study (finished runs are kept).
set -euo pipefail
OUT=${1:?usage: submit.sh RESULTS_DIR N_TASKS [unet-ft study options...]}
N=${2:?usage: submit.sh RESULTS_DIR N_TASKS [unet-ft study options...]}
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/slurm"
prep=$(sbatch --parsable --output="$OUT/slurm/prepare-%j.out" \
       "$HERE/prepare.sbatch" "$OUT" "$@")
grid=$(sbatch --parsable --dependency=afterok:"$prep" --array=0-$((N - 1)) \
       --output="$OUT/slurm/array-%A_%a.out" "$HERE/array.sbatch" "$OUT")
report=$(sbatch --parsable --dependency=afterany:"$grid" \
         --output="$OUT/slurm/report-%j.out" "$HERE/report.sbatch" "$OUT")
echo "submitted: prepare $prep, array $grid (0-$((N - 1))), report $report"

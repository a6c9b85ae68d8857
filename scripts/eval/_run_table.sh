#!/usr/bin/env bash
# Run every lmms-eval command of one paper table in order: shared by the table scripts in this folder.
#   bash scripts/eval/_run_table.sh TABLE          # TABLE: a name under configs/eval/ or a YAML path
# Environment (all optional):
#   PYTHON=.venv/bin/python   interpreter of the commands (with lmms-eval and this package installed)
#   NUM_GPUS=N                processes for `accelerate launch` (default: GPUs visible, else 1)
#   MAIN_PORT=29500           accelerate's main process port (change it to run two tables at once)
#   ROWS="Full tokens,AOT 10 %"   COLUMNS="MVBench,VideoMME"   only these (labels or slugs)
#   OUTPUT_DIR=DIR            results under DIR instead of the table's output_dir
#   DRY_RUN=1                 print the commands, run nothing
#   FORCE=1                   re-run finished runs (their results are moved to <run>/.superseded/)
# The work is done by `python -m llava.eval.runner` (see its docstring): every run is keyed by its full
# settings (<run>/aot_run.json), and counts as finished only when its results parse and cover every
# sample; a cell whose settings changed is re-run, saying why. Before any model loads, the task names,
# compressions, frame counts and output folders are checked. A run killed part-way continues from its
# cached answers when the same command is launched again. A run that fails is logged and the table goes
# on; at the end the table is printed, then each failed run with the first error line of its log, and the
# script exits 1. SIGINT/SIGTERM stop the running evaluation too; the script then exits 128 + signal.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash scripts/eval/_run_table.sh TABLE   (a name under configs/eval/ or a YAML path)" >&2
    exit 2
fi
table="$1"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON="${PYTHON:-.venv/bin/python}"
source scripts/num_gpus.sh
export PYTHON NUM_GPUS

args=("$table")
[[ -n "${ROWS:-}" ]] && args+=(--rows "$ROWS")
[[ -n "${COLUMNS:-}" ]] && args+=(--columns "$COLUMNS")
[[ -n "${OUTPUT_DIR:-}" ]] && args+=(--output_dir "$OUTPUT_DIR")
[[ "${DRY_RUN:-0}" == 1 ]] && args+=(--dry-run)
[[ "${FORCE:-0}" == 1 ]] && args+=(--force)
exec "$PYTHON" -m llava.eval.runner "${args[@]}"

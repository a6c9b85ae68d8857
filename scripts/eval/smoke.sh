#!/usr/bin/env bash
# CPU smoke run of the evaluation path: a tiny random-weight LLaVA-OneVision checkpoint through lmms-eval
# on the offline task aot_smoke_mcq (lmms_eval_tasks/aot_smoke), full tokens and AOT at 10 %, 4 samples
# each (configs/eval/smoke_tiny.yaml). No GPU, no download; the scores are noise, the accounting is real.
#
#   bash scripts/eval/smoke.sh                 # write runs/smoke/tiny-llava-ov if missing, run, print the table
#   DRY_RUN=1 bash scripts/eval/smoke.sh       # print the commands only
#   FORCE=1 bash scripts/eval/smoke.sh         # re-run although results exist
#   OUTPUT_DIR=/tmp/smoke PYTHON=/path/to/python bash scripts/eval/smoke.sh
#
# Results: runs/smoke/<row>/smoke/<model>/<date>_results.json and <date>_aot_efficiency.json; the table
# (also written to runs/smoke/table.{md,json,png}) is printed at the end, as by
#   .venv/bin/python -m llava.eval.gather smoke_tiny
# A run that fails does not stop the other; the script then prints the first error line of its log and
# exits 1 (lmms-eval itself exits 0 when an evaluation raises).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
cd "$here/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHON

checkpoint=runs/smoke/tiny-llava-ov
if [[ "${DRY_RUN:-0}" != 1 && ! -f "$checkpoint/config.json" ]]; then
    echo "writing the tiny checkpoint to $checkpoint"
    "$PYTHON" -m llava.cli tiny-checkpoint "$checkpoint"
fi

exec bash scripts/eval/_run_table.sh smoke_tiny

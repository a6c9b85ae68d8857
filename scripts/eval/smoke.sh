#!/usr/bin/env bash
# CPU smoke run of the evaluation path, on the three task families AOT is evaluated on: a tiny random-weight
# LLaVA-OneVision checkpoint through lmms-eval on the offline tasks aot_smoke_mcq (video QA,
# lmms_eval_tasks/aot_smoke), aot_smoke_grounding (temporal grounding, lmms-eval's Charades-STA scorer) and
# aot_smoke_caption (captioning, lmms-eval's YouCook2 scorer), full tokens and AOT at 10 %, 4 samples each
# (configs/eval/smoke_tiny.yaml, smoke_tiny_grounding.yaml, smoke_tiny_caption.yaml). No GPU, no download;
# the scores are noise, the accounting is real. Captioning's scorer runs Java (checked before any model loads).
#
#   bash scripts/eval/smoke.sh                 # write runs/smoke/tiny-llava-ov if missing, run, print the tables
#   DRY_RUN=1 bash scripts/eval/smoke.sh       # print the commands only
#   FORCE=1 bash scripts/eval/smoke.sh         # re-run although results exist
#   OUTPUT_DIR=/tmp/smoke PYTHON=/path/to/python bash scripts/eval/smoke.sh
#
# Results: runs/smoke/<row>/smoke/<model>/<date>_results.json and <date>_aot_efficiency.json (grounding and
# captioning: runs/smoke_grounding/, runs/smoke_caption/; under OUTPUT_DIR: OUTPUT_DIR, OUTPUT_DIR/grounding,
# OUTPUT_DIR/caption); each table (also written to <folder>/table.{md,json,png}) is printed, as by
#   .venv/bin/python -m llava.eval.gather smoke_tiny
# A run that fails does not stop the others; the script then exits 1 (lmms-eval itself exits 0 when an
# evaluation raises).
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

status=0
bash scripts/eval/_run_table.sh smoke_tiny || status=$?
for family in grounding caption; do
    if [[ -n "${OUTPUT_DIR:-}" ]]; then
        OUTPUT_DIR="$OUTPUT_DIR/$family" bash scripts/eval/_run_table.sh "smoke_tiny_$family" || status=$?
    else
        bash scripts/eval/_run_table.sh "smoke_tiny_$family" || status=$?
    fi
done
exit "$status"

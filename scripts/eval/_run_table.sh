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
#   FORCE=1                   re-run runs that already have a *_results.json
# Before any model loads, every task name is checked against lmms-eval's (an unknown one: an error
# listing the close and the bundled ones). A run that fails is logged and the table goes on; at the end
# the table is printed with what finished, then each failed run with the first error line of its log,
# and the script exits 1. lmms-eval exits 0 when an evaluation raises, so a run counts as finished only
# when it wrote its *_results.json. Each run's console output is kept in <output_path>/lmms_eval.log;
# after each finished run its efficiency summary (<date>_aot_efficiency.json) is written and printed.
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

plan_args=("$table" --format tsv --expand)
[[ -n "${ROWS:-}" ]] && plan_args+=(--rows "$ROWS")
[[ -n "${COLUMNS:-}" ]] && plan_args+=(--columns "$COLUMNS")
[[ -n "${OUTPUT_DIR:-}" ]] && plan_args+=(--output_dir "$OUTPUT_DIR")
[[ "${DRY_RUN:-0}" != 1 ]] && plan_args+=(--check-tasks)
plan=$("$PYTHON" -m llava.eval.plan "${plan_args[@]}")
mapfile -t lines <<<"$plan"

finished() {  # a run is finished when lmms-eval wrote its results file
    [[ -d "$1" ]] && [[ -n "$(find "$1" -name '*_results.json' -print -quit)" ]]
}

total=${#lines[@]}
failed=()
skipped=0
done_now=0
i=0
for line in "${lines[@]}"; do
    i=$((i + 1))
    IFS=$'\t' read -r row column out cmd <<<"$line"
    eval "argv=($cmd)"   # the planned command (shell-quoted by the plan) as an array
    if [[ "${FORCE:-0}" != 1 ]] && finished "$out"; then
        skipped=$((skipped + 1))
        if [[ "${DRY_RUN:-0}" == 1 ]]; then
            echo "# [$i/$total] $row / $column: finished, skipped ($out)"
        else
            echo "[$i/$total] $row / $column: finished, skipped ($out)"
        fi
        continue
    fi
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        echo "# [$i/$total] $row / $column"
        echo "$cmd"
        continue
    fi
    echo "[$i/$total] $row / $column -> $out"
    mkdir -p "$out"
    log="$out/lmms_eval.log"
    if "${argv[@]}" </dev/null 2>&1 | tee "$log"; then
        if finished "$out"; then
            done_now=$((done_now + 1))
            "$PYTHON" -m llava.cli report "$out" || true
            continue
        fi
        why="exited 0 but wrote no *_results.json"
    else
        why="exit code ${PIPESTATUS[0]}"
    fi
    failed+=("$row / $column: $why (log: $log)"$'\n'"      $("$PYTHON" -m llava.eval.runlog "$log")")
done

[[ "${DRY_RUN:-0}" == 1 ]] && exit 0
gather_args=("$table")
[[ -n "${OUTPUT_DIR:-}" ]] && gather_args+=(--runs "$OUTPUT_DIR")
echo
status=0
"$PYTHON" -m llava.eval.gather "${gather_args[@]}" || status=$?
echo
echo "$table: $total runs, $done_now finished now, $skipped already finished, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
    printf '  failed: %s\n' "${failed[@]}"
    echo "Re-launch the same command to retry them (finished runs are skipped)."
    exit 1
fi
exit "$status"

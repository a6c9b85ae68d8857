#!/usr/bin/env bash
# Qwen3-VL-8B-Instruct, 32 frames of at most 448 x 448 px, full tokens and AOT at 25/15/10 % retention
# on MVBench, LongVideoBench, VideoMME and MLVU (dev): 16 lmms-eval runs (configs/eval/qwen3_vl_8b.yaml).
#
#   NUM_GPUS=8 bash scripts/eval/qwen3_vl_8b.sh                      # one node, 8 GPUs (data parallel)
#   NUM_GPUS=2 bash scripts/eval/qwen3_vl_8b.sh                      # fewer GPUs: same results, slower
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/eval/qwen3_vl_8b.sh            # print the commands only
#   ROWS="Full tokens,AOT 10 %" COLUMNS=MVBench bash scripts/eval/qwen3_vl_8b.sh   # a part of the table
#   FORCE=1 ...                                                      # re-run finished runs too
#   PYTHON=/path/to/python MAIN_PORT=29501 OUTPUT_DIR=DIR ...        # interpreter, accelerate port, results folder
#
# Results: runs/eval/qwen3_vl_8b/<row>/<benchmark>/<model>/<date>_results.json (+ samples, the plugin's
# <date>_aot_efficiency.json, and lmms_eval.log). Re-launching resumes: runs with a results file are skipped.
# A failed run does not stop the table; the script exits 1 at the end and lists the failed runs.
# Afterwards render the table (Markdown, JSON, plot):
#   .venv/bin/python -m llava.eval.gather qwen3_vl_8b
# Prerequisites (datasets under $HF_HOME, HF login): docs/reproduce.md.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/_run_table.sh" qwen3_vl_8b

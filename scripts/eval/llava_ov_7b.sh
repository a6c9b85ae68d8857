#!/usr/bin/env bash
# The paper's main table: LLaVA-OneVision-7B, 32 frames, full tokens and AOT at 25/20/15/10 % retention
# on MVBench, EgoSchema (subset), LongVideoBench and VideoMME: 20 lmms-eval runs (configs/eval/llava_ov_7b.yaml).
#
#   NUM_GPUS=8 bash scripts/eval/llava_ov_7b.sh                      # one node, 8 GPUs (data parallel)
#   NUM_GPUS=2 bash scripts/eval/llava_ov_7b.sh                      # fewer GPUs: same results, slower
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/eval/llava_ov_7b.sh            # print the commands only
#   ROWS="Full tokens,AOT 10 %" COLUMNS=MVBench bash scripts/eval/llava_ov_7b.sh   # a part of the table
#   FORCE=1 ...                                                      # re-run finished runs too
#   PYTHON=/path/to/python MAIN_PORT=29501 OUTPUT_DIR=DIR ...        # interpreter, accelerate port, results folder
#
# Results: runs/eval/llava_ov_7b/<row>/<benchmark>/<model>/<date>_results.json (+ samples, the plugin's
# <date>_aot_efficiency.json, and lmms_eval.log). Re-launching resumes: runs with a results file are skipped.
# A failed run does not stop the table; the script exits 1 at the end and lists the failed runs.
# Afterwards render the table (Markdown, JSON, plot):
#   .venv/bin/python -m llava.eval.gather llava_ov_7b
# Prerequisites (datasets under $HF_HOME, HF login): docs/reproduce.md.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/_run_table.sh" llava_ov_7b

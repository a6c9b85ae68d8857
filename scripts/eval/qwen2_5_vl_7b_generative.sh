#!/usr/bin/env bash
# Qwen2.5-VL-7B-Instruct, 32 frames: temporal grounding (Charades-STA) and captioning (YouCook2), full tokens, AOT at 25/15/10 % and the
# same-harness baselines at the same budgets: 38 lmms-eval runs (configs/eval/qwen2_5_vl_7b_generative.yaml).
#
#   NUM_GPUS=8 bash scripts/eval/qwen2_5_vl_7b_generative.sh                  # one node, 8 GPUs (data parallel)
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/eval/qwen2_5_vl_7b_generative.sh        # print the commands only
#   ROWS="Full tokens,AOT 10 %" COLUMNS=mIoU bash scripts/eval/qwen2_5_vl_7b_generative.sh   # a part of the table
#   FORCE=1 ...                                             # re-run finished runs too
#
# Results: runs/eval/qwen2_5_vl_7b_generative/<row>/<charades-sta|youcook2>/<model>/<date>_results.json. Re-launching resumes.
# Afterwards render the table:
#   .venv/bin/python -m llava.eval.gather qwen2_5_vl_7b_generative
# Prerequisites (datasets under $HF_HOME, Java for YouCook2's scorer): docs/reproduce.md.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/_run_table.sh" qwen2_5_vl_7b_generative

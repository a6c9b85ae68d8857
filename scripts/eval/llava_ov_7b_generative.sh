#!/usr/bin/env bash
# LLaVA-OneVision-7B, 32 frames: temporal grounding (Charades-STA) and captioning (YouCook2), full tokens, AOT at 25/15/10 % and the
# same-harness baselines at the same budgets: 38 lmms-eval runs (configs/eval/llava_ov_7b_generative.yaml).
#
#   NUM_GPUS=8 bash scripts/eval/llava_ov_7b_generative.sh                  # one node, 8 GPUs (data parallel)
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/eval/llava_ov_7b_generative.sh        # print the commands only
#   ROWS="Full tokens,AOT 10 %" COLUMNS=mIoU bash scripts/eval/llava_ov_7b_generative.sh   # a part of the table
#   FORCE=1 ...                                             # re-run finished runs too
#
# Results: runs/eval/llava_ov_7b_generative/<row>/<charades-sta|youcook2>/<model>/<date>_results.json. Re-launching resumes.
# Afterwards render the table:
#   .venv/bin/python -m llava.eval.gather llava_ov_7b_generative
# Prerequisites (datasets under $HF_HOME, Java for YouCook2's scorer): docs/reproduce.md.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/_run_table.sh" llava_ov_7b_generative

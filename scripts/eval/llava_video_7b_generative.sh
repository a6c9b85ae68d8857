#!/usr/bin/env bash
# LLaVA-Video-7B-Qwen2, 64 frames, frame times in the prompt:
# temporal grounding (Charades-STA; TimeLens-Bench's Charades-, ActivityNet- and QVHighlights-TimeLens) and
# captioning (YouCook2, VATEX), full tokens, AOT at 25/15/10 % and the same-harness baselines at the same
# budgets: 19 rows x 6 benchmark runs = 114 lmms-eval runs (configs/eval/llava_video_7b_generative.yaml).
#
#   NUM_GPUS=8 bash scripts/eval/llava_video_7b_generative.sh              # one node, 8 GPUs (data parallel)
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/eval/llava_video_7b_generative.sh    # print the commands only
#   ROWS="Full tokens,AOT 10 %" COLUMNS="Charades-STA mIoU" bash scripts/eval/llava_video_7b_generative.sh
#                                                       # a part of the table (labels or slugs)
#   FORCE=1 ...                                         # re-run finished runs too
#
# Results: runs/eval/llava_video_7b_generative/<row>/<run>/<model>/<date>_results.json, one run per
# benchmark (charades_sta, charades_timelens, activitynet_timelens, qvhighlights_timelens, youcook2, vatex);
# the columns of a benchmark read its run. Re-launching resumes. Afterwards render the table:
#   .venv/bin/python -m llava.eval.gather llava_video_7b_generative
# Prerequisites (datasets under $HF_HOME, Java for the captioning scorers): docs/reproduce.md.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/_run_table.sh" llava_video_7b_generative

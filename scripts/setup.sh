#!/usr/bin/env bash
# Set up the project on a fresh machine: a virtual environment at .venv with the package (editable)
# and its test tools. Re-running is quick: it reinstalls only when pyproject.toml changed.
#   bash scripts/setup.sh            # core + dev
#   AOT_EXTRAS=dev,eval bash scripts/setup.sh
#   AOT_TORCH="torch==2.13.0" ...    # the torch requirement to install first (default below)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
extras=${AOT_EXTRAS:-dev}
torch_req=${AOT_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
stamp=.venv/.aot-setup-$(echo "$extras $torch_req" | tr ' ,=<>' '_____')
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $torch_req"
  "${pip[@]}" "$torch_req"
fi
echo "[setup] installing aot-video[$extras] (editable)"
"${pip[@]}" -e ".[$extras]"
touch "$stamp"
echo "[setup] done: $(.venv/bin/python -c 'import torch, visionzip; print("torch", torch.__version__, "| visionzip", visionzip.__version__)')"

#!/usr/bin/env bash
# Set up the project on a fresh machine: a virtual environment at .venv with the package (editable),
# its test tools, lmms-eval, and the training stack (DeepSpeed, peft, wandb). Re-running is quick: it
# reinstalls only when pyproject.toml changed.
#   bash scripts/setup.sh                      # core + dev + eval (lmms-eval) + train (deepspeed, peft) + wandb
#   AOT_EXTRAS=dev,eval bash scripts/setup.sh  # without the training stack
#   AOT_TORCH="torch==2.13.0" ...              # the torch requirement (default below)
# torch is pinned in the same pip call as the extras: lmms-eval pulls torchvision, and resolved on its
# own that would replace the installed torch with the newest CUDA build (several GB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
extras=${AOT_EXTRAS:-dev,eval,train,wandb}
torch_req=${AOT_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
stamp=.venv/.aot-setup-$(echo "$extras $torch_req" | tr ' ,=<>' '_____')
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
pip_install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# pip configurations that list absent local package folders make pip print one warning per
# package; they say nothing about this install, so they are filtered out (pip's exit code is kept)
pip() { "${pip_install[@]}" "$@" 2> >(grep -v '^WARNING: Location .* is ignored: it is neither a file nor a directory' >&2); }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $torch_req"
  pip "$torch_req"
fi
# DeepSpeed ships as a source package whose build imports torch: built in pip's isolated build
# environment it would pull a second, CUDA torch (several GB) just to build. So the `train` extra is
# installed apart, without build isolation, against the torch installed here.
other=$(echo "$extras" | tr ',' '\n' | { grep -vx train || true; } | paste -sd, -)
echo "[setup] installing aot-video[${other}] (editable) with $torch_req"
pip "$torch_req" -e ".${other:+[$other]}"
if echo "$extras" | tr ',' '\n' | grep -qx train; then
  echo "[setup] installing aot-video[train] (deepspeed, peft) against the installed torch"
  pip "setuptools>=77" wheel
  pip --no-build-isolation "$torch_req" -e ".[train]"
fi
# PyPI's torchvision is built against CUDA torch; next to a CPU-only torch (the CPU wheel on machines
# without a GPU) its compiled ops cannot load and `import torchvision` raises, which breaks every
# `import transformers.pipelines` (lmms-eval imports it). Nothing here needs torchvision, and
# transformers works without it, so it is removed in that one case.
if .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)" \
   && ! .venv/bin/python -c "import torchvision" >/dev/null 2>&1 \
   && .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
  echo "[setup] removing torchvision: its CUDA build cannot load next to CPU-only torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  .venv/bin/python -m pip uninstall --quiet --yes torchvision
fi
touch "$stamp"
echo "[setup] done: $(.venv/bin/python -c 'import torch, visionzip; print("torch", torch.__version__, "| visionzip", visionzip.__version__)')"

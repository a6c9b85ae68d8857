#!/usr/bin/env bash
# Set up the project on a fresh machine: a virtual environment at .venv holding exactly the packages of
# requirements.lock (every transitive dependency at an exact version, checked against its hashes:
# torch, torchvision, transformers, lmms-eval, DeepSpeed, peft, wandb, gradio, the test tools), then this
# package in editable mode. Re-running is instant while the lock and pyproject.toml are unchanged.
#   bash scripts/setup.sh                         # the locked environment (Linux x86_64, CPython 3.11)
#   AOT_UNLOCKED=1 bash scripts/setup.sh          # newest releases that pyproject.toml allows, no lock
#   AOT_UNLOCKED=1 AOT_EXTRAS=dev,eval ...        # unlocked, a subset of extras (default: every extra)
#   AOT_INSTALL_BROWSER=1 bash scripts/setup.sh   # also Debian's chromium + chromium-driver (as root; CI does it)
#   AOT_WITH_VLLM=1 bash scripts/setup.sh         # also .venv-vllm, vLLM's own locked environment (CI does it)
#   AOT_TORCH="torch==2.9.1 torchvision==0.24.1" AOT_UNLOCKED=1 ...   # unlocked, another torch build
# The browser tests of `aot demo --serve` (tests/test_demo_app.py) drive headless Chromium: where it is
# missing, the set-up installs Debian's chromium and chromium-driver when it runs as root with apt-get and
# CI or AOT_INSTALL_BROWSER=1 is set; otherwise it prints how to install them, and those tests skip.
# The lock is refreshed by `bash scripts/lock.sh`. A lock that no longer covers pyproject.toml (a
# dependency added without refreshing it) stops the set-up with the package named.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
unlocked=${AOT_UNLOCKED:-0}
extras=${AOT_EXTRAS:-dev,eval,train,wandb,demo}
torch_req=${AOT_TORCH:-torch torchvision}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
if [ "$unlocked" = 1 ]; then
  key="unlocked $extras $torch_req $(sha256sum < pyproject.toml)"
else
  key="locked $({ cat pyproject.toml; cat requirements.lock 2>/dev/null || true; } | sha256sum)"
fi
# headless Chromium and its driver for the browser tests (not part of the stamp: a fresh machine may
# reuse a .venv, and installing is skipped as soon as both are there)
browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return 0
  fi
  local asked=0
  { [ -n "${CI:-}" ] || [ "${AOT_INSTALL_BROWSER:-0}" = 1 ]; } && asked=1
  if [ "$asked" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's chromium and chromium-driver for the browser tests"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >/dev/null; then
      echo "[setup] apt-get could not install chromium chromium-driver: the browser tests will skip" >&2
    fi
  else
    echo "[setup] no chromium/chromedriver: the browser tests skip (install: apt-get install chromium" \
         "chromium-driver, or as root: AOT_INSTALL_BROWSER=1 bash scripts/setup.sh)"
  fi
}
# vLLM's environment (.venv-vllm, its own lock: scripts/setup_vllm.sh) for the vLLM plugin's tests
vllm_env() {
  if [ -n "${CI:-}" ] || [ "${AOT_WITH_VLLM:-0}" = 1 ]; then
    bash scripts/setup_vllm.sh
  elif [ ! -x .venv-vllm/bin/python ]; then
    echo "[setup] no .venv-vllm: the vLLM plugin's tests skip (make it: bash scripts/setup_vllm.sh)"
  fi
}
stamp=.venv/.aot-setup
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  browser
  vllm_env
  exit 0
fi
rm -f "$stamp"
pip_install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# pip configurations that list absent local package folders make pip print one warning per
# package; they say nothing about this install, so they are filtered out (pip's exit code is kept)
pip() { "${pip_install[@]}" "$@" 2> >(grep -v '^WARNING: Location .* is ignored: it is neither a file nor a directory' >&2); }

if [ "$unlocked" = 1 ]; then
  # DeepSpeed ships as a source package whose build imports torch: built in pip's isolated build
  # environment it would pull a second torch just to build. So torch comes first, and the `train`
  # extra is installed apart, without build isolation, against it.
  echo "[setup] unlocked: installing $torch_req and aot-video[$extras] (editable), newest releases"
  # shellcheck disable=SC2086
  pip $torch_req "setuptools>=77" wheel
  other=$(echo "$extras" | tr ',' '\n' | { grep -vx train || true; } | paste -sd, -)
  # shellcheck disable=SC2086
  pip $torch_req -e ".${other:+[$other]}"
  if echo "$extras" | tr ',' '\n' | grep -qx train; then
    # shellcheck disable=SC2086
    pip --no-build-isolation $torch_req -e ".[train]"
  fi
else
  .venv/bin/python scripts/lockfile.py check requirements.lock
  parts=$(mktemp -d)
  trap 'rm -rf "$parts"' EXIT
  .venv/bin/python scripts/lockfile.py split requirements.lock "$parts"
  echo "[setup] installing requirements.lock ($(grep -c '^[A-Za-z0-9]' requirements.lock) packages, hashes checked)"
  pip --require-hashes --no-deps -r "$parts/first.txt"
  # DeepSpeed is a source package whose build imports torch: built without build isolation, against
  # the torch just installed (isolated, it would download a second torch only to build)
  pip --require-hashes --no-deps --no-build-isolation -r "$parts/built_against_torch.txt"
  echo "[setup] installing aot-video (editable)"
  pip --no-deps --no-build-isolation -e .
  # the lock is a complete, consistent set: pip check proves nothing is missing or at a wrong version
  .venv/bin/python -m pip check --disable-pip-version-check >/dev/null \
    || { .venv/bin/python -m pip check --disable-pip-version-check; echo "[setup] pip check failed: refresh the lock (bash scripts/lock.sh)" >&2; exit 1; }
fi
echo "$key" > "$stamp"
browser
vllm_env
echo "[setup] done: $(.venv/bin/python -c 'import torch, torchvision, visionzip; print("torch", torch.__version__, "| torchvision", torchvision.__version__, "| visionzip", visionzip.__version__)')"

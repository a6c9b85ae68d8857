#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject.toml (every extra) plus scripts/lock.in with pip-tools'
# pip-compile, every transitive package at an exact version, with hashes. Run it after changing a
# dependency in pyproject.toml or the torch build in scripts/lock.in, and commit the lock with that change.
#   bash scripts/lock.sh                 # keep the locked versions that still fit, add what is new
#   UPGRADE=1 bash scripts/lock.sh       # re-resolve everything to the newest versions that fit
#   bash scripts/lock.sh vllm            # requirements-vllm.lock instead (.venv-vllm: scripts/vllm/lock.in)
# pip-compile runs pip's resolver, so it sees the indexes pip is configured with; the lock records no
# index URL. It resolves for this machine's platform and Python (recorded in the lock's header): the lock
# is for Linux x86_64, CPython 3.11. Elsewhere: AOT_UNLOCKED=1 bash scripts/setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
tools=${LOCK_TOOLS_VENV:-${TMPDIR:-/tmp}/aot-lock-tools}
if [ ! -x "$tools/bin/pip-compile" ]; then
  echo "[lock] installing pip-tools into $tools"
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "pip-tools==7.6.2" \
    2> >(grep -v '^WARNING: Location .* is ignored' >&2)
fi
if [ "${1:-}" = vllm ]; then
  # vLLM's environment: this package's core dependencies and scripts/vllm/lock.in. Resolved against the
  # package index only (no local wheel folders, whose torch 2.13.0+cpu would satisfy torch==2.13.0), with
  # pip-tools' caches rebuilt (they key hashes by name and version, so a local build's hash would stay)
  echo "[lock] resolving pyproject.toml (no extras) + scripts/vllm/lock.in"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$tools/bin/pip-compile" --quiet --allow-unsafe --generate-hashes \
    --strip-extras --no-emit-find-links --no-emit-index-url --rebuild $([ "${UPGRADE:-0}" = 1 ] && echo --upgrade) \
    --output-file=requirements-vllm.lock pyproject.toml scripts/vllm/lock.in
  "$tools/bin/python" scripts/lockfile.py stamp requirements-vllm.lock
  echo "[lock] wrote requirements-vllm.lock ($(grep -c '^[A-Za-z0-9]' requirements-vllm.lock) packages)"
  exit 0
fi
args=(--quiet --allow-unsafe --generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url
      --extra=dev --extra=eval --extra=train --extra=wandb --extra=demo --output-file=requirements.lock)
[ "${UPGRADE:-0}" = 1 ] && args+=(--upgrade)
echo "[lock] resolving pyproject.toml + scripts/lock.in (takes several minutes: lmms-eval has ~170 dependencies)"
"$tools/bin/pip-compile" "${args[@]}" pyproject.toml scripts/lock.in 2> >(grep -v 'WARNING: Location .* is ignored' >&2)
"$tools/bin/python" scripts/lockfile.py stamp requirements.lock
"$tools/bin/python" scripts/lockfile.py check requirements.lock
echo "[lock] wrote requirements.lock ($(grep -c '^[A-Za-z0-9]' requirements.lock) packages)"

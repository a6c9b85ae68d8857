"""``python -m benchmarks.vllm_serving`` through its command line, at a small load: two settings, each
server started and stopped by the benchmark, the printed table and the JSON rows. It checks what the
benchmark reports (counts, retention, failures), never how fast anything ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: bash scripts/setup_vllm.sh")


def test_the_serving_benchmark_reports_each_setting(tmp_path):
    out = tmp_path / "serving.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.vllm_serving", "--settings", "stock,aot@0.25,foo@0.25", "--requests", "4",
         "--concurrency", "2", "--warmup", "1", "--max-tokens", "4", "--workdir", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {r["setting"]: r for r in json.loads(out.read_text())["rows"]}
    stock, aot, bad = rows["stock"], rows["aot@0.25"], rows["foo@0.25"]
    assert stock["ok"] == aot["ok"] == 4 and stock["failures"] == aot["failures"] == 0
    assert stock["video_tokens"] == 768 and aot["video_tokens"] == 192 and aot["retention"] == 0.25
    assert aot["prompt_tokens"] - aot["video_tokens"] == stock["prompt_tokens"] - stock["video_tokens"]
    assert bad["status"] != "ok" and "foo" in json.dumps(bad)  # a server that cannot start is a failed row
    assert "| aot@0.25 |" in run.stdout and "| foo@0.25 |" in run.stdout

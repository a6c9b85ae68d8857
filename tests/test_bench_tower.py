"""The vision-tower benchmark runs end to end through its CLI and reports every field (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import tower as bench_tower

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, dict]:
    """(stdout, JSON report) of ``python -m benchmarks.tower --quick --with-release --device cpu``."""
    out = tmp_path_factory.mktemp("bench_tower") / "t.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.tower", "--quick", "--with-release", "--device", "cpu", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tables_printed(quick_run):
    stdout, _ = quick_run
    assert bench_tower.TABLE_HEADER in stdout and bench_tower.MEMORY_HEADER in stdout
    for label in bench_tower.VARIANTS.values():
        assert f"| {label}" in stdout
    assert "overhead of (ii) over (i)" in stdout


def test_every_variant_measured(quick_run):
    _, report = quick_run
    s = report["settings"]
    assert s["quick"] and s["frames"] == bench_tower.QUICK_FRAMES and s["repeats"] == 1
    assert (s["tokens"], s["layers"], s["heads"]) == (729, 6, 4)
    assert s["score_layers"] == [5, -2] and s["score_layers_resolved"] == [5, 4]
    assert set(report["results"]) == {"forward", "forward_with_scores", "release"}
    for r in report["results"].values():
        assert len(r["times_ms"]) == 1
        assert _positive_finite(r["median_ms"]) and _positive_finite(r["min_ms"])
        assert r["peak_extra_mb"] is None or r["peak_extra_mb"] >= 0
    plain, scored = report["results"]["forward"], report["results"]["forward_with_scores"]
    assert report["overhead_pct"] == pytest.approx(100 * (scored["median_ms"] / plain["median_ms"] - 1))
    assert report["overhead_min_pct"] == pytest.approx(100 * (scored["min_ms"] / plain["min_ms"] - 1))
    assert report["overhead_goal_pct"] == 15.0
    assert report["overhead_goal_met"] == (report["overhead_pct"] <= 15.0)


def test_memory_sizes_and_checks(quick_run):
    _, report = quick_run
    s, m = report["settings"], report["memory"]
    f, h, n = s["frames"], s["heads"], s["tokens"]
    assert m["score_buffer_mb"] == pytest.approx(f * h * n * 4 / 1e6)
    assert m["chunk_map_mb"] == pytest.approx(f * h * min(s["chunk_size"], n) * n * 4 / 1e6)
    assert m["release_maps_mb"] == pytest.approx(s["layers"] * f * h * n * n * 4 / 1e6)
    assert report["release"]["ran"] and report["release"]["fits"]
    assert report["release"]["maps_estimate_gb"] == pytest.approx(m["release_maps_mb"] / 1e3)
    assert report["checks"]["features_max_abs_diff"] < 1e-4
    assert report["checks"]["scores_max_abs_diff_vs_release"] < 1e-4


def test_environment_recorded(quick_run):
    _, report = quick_run
    env = report["environment"]
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch"] == torch.__version__
    assert env["load"]["wall_s"] > 0


def test_bad_score_layers_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_tower.main(["--quick", "--score-layers", "5,99", "--json", "/dev/null"])
    assert exc.value.code == 2
    assert "score_layers" in capsys.readouterr().err

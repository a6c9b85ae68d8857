"""The benchmark runs end to end through its CLI and reports every config (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import visionzip as vz
from benchmarks import compression as bench

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, dict]:
    """(stdout, JSON report) of ``python -m benchmarks.compression --quick --stages``."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compression", "--quick", "--stages", "--device", "cpu", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tables_printed(quick_run):
    stdout, report = quick_run
    assert bench.TABLE_HEADER in stdout
    assert bench.STAGE_HEADER in stdout
    for name in bench.DEFAULT_PRESETS:
        assert f"| {name} |" in stdout
    assert report["stages"]["config"] == bench.DEFAULT_PRESETS[0]


@pytest.mark.slow
def test_every_config_has_timings_and_ratio(quick_run):
    _, report = quick_run
    results = report["results"]
    assert [r["config"] for r in results] == list(bench.DEFAULT_PRESETS)
    for r in results:
        assert r["dim"] == bench.QUICK_DIM
        assert len(r["times_ms"]) == len(r["floor"]["times_ms"]) == report["settings"]["repeats"] == 1
        for value in (r["median_ms"], r["min_ms"], r["floor"]["median_ms"], r["floor"]["min_ms"], r["ratio"]):
            assert _positive_finite(value)
        assert r["ratio"] == pytest.approx(r["median_ms"] / r["floor"]["median_ms"])
        k, n = r["num_anchors"], r["tokens_per_frame"]
        assert r["floor"]["output_shape"] == [r["frames"], n - k, k]
        products = r["products"]  # every default preset is an AOT one
        assert len(products["times_ms"]) == 1 and _positive_finite(products["median_ms"])
        assert products["cosine_shapes"] == [[r["frames"], n, r["dim"]], [r["frames"], r["dim"], k]]
        # the step forms the kept pooled cells alone (every default preset): their product with the frames
        kept = products["kept_cells_mean"]
        assert 0 < kept < n / 4
        assert products["plan_shapes"][1] == [r["frames"], n, r["dim"]]
        assert kept <= products["plan_shapes"][0][1] and products["plan_shapes"][0][::2] == [r["frames"], n]
        assert kept == pytest.approx(r["stage_tokens"]["pooled"] / r["frames"])  # the kept cells per frame
        assert r["products_ratio"] == pytest.approx(products["median_ms"] / r["floor"]["median_ms"])
        assert r["naive_temp_gb"] == pytest.approx(r["frames"] * (n - k) * k * r["dim"] * 4 / 1e9)
        assert r["peak_extra_mb"] is None or r["peak_extra_mb"] >= 0
        assert _positive_finite(r["input_mb"])
    for row in report["stages"]["stages"]:
        assert _positive_finite(row["median_ms"]) and _positive_finite(row["over_floor"])


@pytest.mark.slow
def test_tokens_match_a_direct_call(quick_run):
    _, report = quick_run
    seed = report["settings"]["seed"]
    for r in report["results"]:
        inp = bench.make_inputs(r["frames"], r["dim"], seed=seed)
        res = vz.compress_video(
            inp.features, inp.shallow_scores, inp.deep_scores, config=vz.get_preset(r["config"]),
            grid=tuple(r["grid"]), image_newline=inp.image_newline,
        )
        assert r["output_tokens"] == res.num_tokens > 0
        assert r["retention"] == pytest.approx(res.retention)
        assert 0 < r["retention"] < 1


@pytest.mark.slow
def test_environment_recorded(quick_run):
    _, report = quick_run
    env = report["environment"]
    assert env["device"] == "cpu" and env["dtype"] == "float32"
    assert env["torch"] == torch.__version__
    assert env["cpu_count"] >= 1 and env["torch_threads"] >= 1
    for key in ("device_name", "date", "load"):
        assert env[key]


def test_inputs_are_seeded_and_row_major():
    a = bench.make_inputs(8, 16, seed=3)
    b = bench.make_inputs(8, 16, seed=3)
    assert a.features.shape == (8, 729, 16) and a.features.is_contiguous()
    assert a.image_newline.shape == (16,)
    assert torch.equal(a.features, b.features) and torch.equal(a.deep_scores, b.deep_scores)
    assert bool((a.shallow_scores > 0).all()) and bool((a.deep_scores > 0).all())


def test_unknown_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--presets", "no_such_preset", "--quick"])
    assert exc.value.code == 2
    assert "no_such_preset" in capsys.readouterr().err


def test_input_families_by_name(tmp_path, capsys):
    report = bench.main(["--quick", "--device", "cpu", "--frames", "8", "--presets", "paper_ov_10pct",
                         "--inputs", "smooth,independent,shared_base", "--json", str(tmp_path / "b.json")])
    assert [(r["config"], r["inputs"]) for r in report["results"]] == [
        ("paper_ov_10pct", "smooth"), ("paper_ov_10pct", "independent"), ("paper_ov_10pct", "shared_base")]
    assert report["settings"]["inputs"] == ["smooth", "independent", "shared_base"]
    assert "| paper_ov_10pct | shared_base |" in capsys.readouterr().out
    # the families differ: a static scene's frames resemble each other, independent ones do not
    a = bench.make_inputs(4, 16, family="shared_base").features
    b = bench.make_inputs(4, 16, family="independent").features
    sim = torch.nn.functional.cosine_similarity
    assert sim(a[0], a[1], dim=-1).mean() > 0.7 > 0.2 > sim(b[0], b[1], dim=-1).mean().abs()


def test_unknown_input_family_lists_the_known_ones(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--inputs", "noise", "--json", str(tmp_path / "b.json")])
    expect = r"input family 'noise' is unknown; expected one of \['independent', 'shared_base', 'smooth'\]"
    with pytest.raises(ValueError, match=expect):
        bench.make_inputs(4, 16, family="noise")

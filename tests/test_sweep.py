"""``aot sweep`` end to end on CPU: the tiny checkpoint and the offline smoke task, the model loaded once,
lmms-eval's simple_evaluate per (method, retention); the JSON, Markdown and plot it writes, and a run
that raises recorded as failed while the sweep goes on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lmms_eval")

import visionzip  # noqa: E402
from llava.eval import sweep  # noqa: E402

RETENTIONS = (0.10, 0.25)
LIMIT = 2


def _methods() -> list[str]:
    """aot, plus one more method when this visionzip has others."""
    others = [m for m in sweep.available_methods() if m not in ("aot", sweep.FULL)]
    return ["aot", *others[:1]]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep: full tokens, then each method at 10 % and 25 %; the first method's 25 % run raises
    (its config cannot be resolved), as a method the installed visionzip lacks would."""
    out = tmp_path_factory.mktemp("sweep")
    methods = _methods()
    real = visionzip.load_config
    broken = sweep.compression_spec(methods[0], RETENTIONS[1])

    def load_config(spec):
        if spec == broken:
            raise ValueError(f"{spec!r} is not available")
        return real(spec)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(visionzip, "load_config", load_config)
        code = sweep.main(["--methods", ",".join(methods), "--retentions", ",".join(map(str, RETENTIONS)),
                           "--limit", str(LIMIT), "--batch-size", "2", "--device", "cpu", "--out", str(out)])
    assert code == 1   # the sweep finished every run, then says one failed
    data = json.loads((out / "sweep.json").read_text())
    return out, methods, data, broken


def test_json_has_the_full_row_and_every_run(swept):
    _, methods, data, _ = swept
    assert data["format"] == "aot-sweep/1" and data["task"] == "aot_smoke_mcq" and data["metric"] == "acc,none"
    assert data["methods"] == methods and data["retentions"] == list(RETENTIONS)
    assert data["model_args"]["max_frames_num"] == 32 and data["model_args"]["pretrained"].endswith("tiny-llava-ov")
    runs = data["runs"]
    assert [(r["method"], r["target_retention"]) for r in runs] == [
        ("full", None), *((m, t) for m in methods for t in RETENTIONS)]
    full = runs[0]
    assert full["spec"] == "full" and not full["failed"] and full["retention"] == 1.0
    assert full["samples"] == LIMIT and full["failed_samples"] == 0
    assert full["visual_tokens"] == full["visual_tokens_plain"] == 32 * 196 + 1
    assert isinstance(full["score"], float) and 0 <= full["score"] <= 1
    assert full["results"]["results"]["aot_smoke_mcq"]["acc,none"] == full["score"]
    assert "samples" not in full["results"]


def test_compressed_runs_measure_retention_and_cost(swept):
    _, _, data, broken = swept
    full, *runs = data["runs"]
    done = [r for r in runs if not r["failed"]]
    assert done
    for r in [full, *done]:
        assert r["efficiency"]["tasks"]["aot_smoke_mcq"]["samples"] == LIMIT   # the run's summary, from its samples
        assert r["efficiency"]["overall"]["retention_mean"] == pytest.approx(r["retention"])
        assert r["results"]["throughput"]["avg_samples"] == LIMIT  # the plugin's figures in lmms-eval's results
        assert r["results"]["throughput"]["avg_failed_samples"] == 0
    for r in done:
        assert r["samples"] == LIMIT and r["failed_samples"] == 0 and r["score"] is not None
        assert 0 < r["retention"] < 1 and r["visual_tokens"] < full["visual_tokens"]
        assert r["prefill_tflops"] < full["prefill_tflops"] and r["compression_ms"] > 0
    aot = [r for r in done if r["method"] == "aot"]
    assert aot
    for r in aot:  # AOT is calibrated on 32 frames of a 27x27 grid, the tiny model's geometry
        assert abs(r["retention"] - r["target_retention"]) < 0.05, r


def test_a_run_that_raises_is_recorded_and_the_sweep_goes_on(swept):
    out, methods, data, broken = swept
    failed = [r for r in data["runs"] if r["failed"]]
    assert len(failed) == 1
    (run,) = failed
    assert (run["method"], run["target_retention"]) == (methods[0], RETENTIONS[1])
    assert "is not available" in run["error"] and run["score"] is None and run["samples"] == 0
    assert data["runs"][-1]["method"] == methods[-1]  # later runs still ran
    md = (out / "sweep.md").read_text()
    assert "Failed runs (1):" in md and f"- {broken}: ValueError" in md


def test_markdown_table(swept):
    out, methods, data, _ = swept
    md = (out / "sweep.md").read_text()
    assert "| Method | 10 % | 25 % | Full |" in md
    full = data["runs"][0]
    assert f"| Full tokens | — | — | {full['score']:.4g} (100.0 %) |" in md
    aot10 = next(r for r in data["runs"] if r["method"] == "aot" and r["target_retention"] == 0.10)
    assert f"| aot | {aot10['score']:.4g} ({100 * aot10['retention']:.1f} %) |" in md
    for method in methods:
        assert f"| {method} |" in md


def test_plot(swept):
    import matplotlib.image as mpimg

    out, _, _, _ = swept
    image = mpimg.imread(out / "sweep.png")
    assert image.shape[1] > 2 * image.shape[0]  # two panels side by side
    assert (out / "sweep.png").stat().st_size > 20_000


@pytest.mark.parametrize("argv, message", [
    (["--methods", "aot,nosuch"], "nosuch"),
    (["--retentions", "0.1,1.5"], "outside (0, 1]"),
    (["--retentions", "ten"], "not a number"),
    (["--limit", "-1"], "positive"),
    (["--model-args", "compression=ov_25pct"], "leave out compression"),
])
def test_bad_flags_are_named(argv, message, tmp_path, capsys):
    assert sweep.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "aot sweep: error:" in err and message in err

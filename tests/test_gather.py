"""llava.eval.gather on synthetic lmms-eval result folders (lmms-eval 0.7.3's layout, the plugin's summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.eval import gather as gather_mod
from llava.eval.gather import gather, newest_results, read_score, render_markdown
from llava.eval.tables import Column, load_table

MODEL_DIR = "lmms-lab__llava-onevision-qwen2-7b-ov"
MVBENCH_SUBTASKS = ["mvbench_action_sequence", "mvbench_moving_count", "mvbench_action_prediction"]


def _results(task: str, metric: str, value, *, subtasks: dict[str, float] | None = None) -> dict:
    """A results file as lmms-eval 0.7.3 writes it (the parts gather reads, and a few it does not)."""
    if subtasks is None:
        results = {task: {"alias": task, metric: value, metric.replace(",", "_stderr,"): 0.01}}
        group_subtasks = {task: []}
    else:   # a group without a group metric: only " " and its alias (evaluator_utils.consolidate_group_results)
        results = {task: {" ": " ", "alias": task}}
        results |= {t: {"alias": f" - {t}", metric: v, metric.replace(",", "_stderr,"): "N/A"}
                    for t, v in subtasks.items()}
        group_subtasks = {t: [] for t in subtasks} | {task: list(subtasks)}
    return {"results": results, "group_subtasks": group_subtasks, "configs": {}, "versions": {},
            "n-samples": {t: {"original": 200, "effective": 200} for t in (subtasks or {task: 0})},
            "date": "20260101_120000", "model_name": "lmms-lab/llava-onevision-qwen2-7b-ov"}


def _efficiency(results_name: str, task: str, *, retention: float, tflops: float | None, failed: int = 0,
                samples: int = 10, compression: str = "none") -> dict:
    stats = {"samples": samples, "failed": failed, "frames_mean": 32.0, "visual_tokens_plain_mean": 6273.0,
             "visual_tokens_mean": round(6272 * retention) + 1, "retention_mean": retention, "vision_ms_mean": 120.0,
             "compression_ms_mean": 3.0, "ttft_ms_mean": 900.0, "peak_memory_mb_max": 20000.0,
             "input_tokens_mean": 6400.0, "output_tokens_mean": 2.0}
    if tflops is not None:
        stats["prefill_tflops_mean"] = tflops
    return {"format": "aot-efficiency/1", "results_file": results_name, "model": "aot_llava_onevision",
            "model_args": f"pretrained=lmms-lab/llava-onevision-qwen2-7b-ov,compression={compression}",
            "compression": compression, "source": "samples",
            "tasks": {task: {**stats, "failed_doc_ids": list(range(failed)), "scores": {}}},
            "overall": stats}


def _write_run(runs: Path, row: str, column: str, results: dict, *, date: str = "20260101_120000",
               efficiency: dict | None = None) -> Path:
    folder = runs / row / column / MODEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{date}_results.json"
    path.write_text(json.dumps(results))
    if efficiency is not None:
        (folder / f"{date}_aot_efficiency.json").write_text(json.dumps(efficiency))
    return path


@pytest.fixture
def ov_runs(tmp_path) -> Path:
    """Full tokens: all four benchmarks with summaries; AOT 10 %: three, no summaries; the rest absent."""
    runs = tmp_path / "runs"
    mv = dict(zip(MVBENCH_SUBTASKS, (60.0, 55.0, 59.0)))   # mean 58.0
    r = _write_run(runs, "full_tokens", "mvbench", _results("mvbench", "mvbench_accuracy,none", None, subtasks=mv))
    (r.parent / r.name.replace("_results.json", "_aot_efficiency.json")).write_text(
        json.dumps(_efficiency(r.name, "mvbench_action_sequence", retention=1.0, tflops=40.8, failed=1)))
    for column, task, metric, value in (("egoschema", "egoschema_subset", "score,none", 0.604),
                                        ("longvideobench", "longvideobench_val_v", "lvb_acc,none", 0.5612),
                                        ("videomme", "videomme", "videomme_perception_score,none", 58.9)):
        res = _results(task, metric, value)
        _write_run(runs, "full_tokens", column, res, efficiency=_efficiency(
            "20260101_120000_results.json", task, retention=1.0, tflops=40.8, failed=2 if column == "videomme" else 0))
    _write_run(runs, "aot_10pct", "mvbench",
               _results("mvbench", "mvbench_accuracy,none", None,
                        subtasks=dict(zip(MVBENCH_SUBTASKS, (57.0, 56.0, 58.0)))))
    _write_run(runs, "aot_10pct", "egoschema", _results("egoschema_subset", "score,none", 0.61))
    _write_run(runs, "aot_10pct", "videomme", _results("videomme", "videomme_perception_score,none", 55.0))
    return runs


def _table_lines(markdown: str) -> dict[str, list[str]]:
    out = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = cells[0]
            while key in out:   # the "↳ paper" lines repeat: number them
                key += "'"
            out[key] = cells[1:]
    return out


def test_cells_avg_paper_and_missing(ov_runs):
    data = gather("llava_ov_7b", ov_runs)
    lines = _table_lines(render_markdown(data))
    #                         MVBench EgoSchema LVB  VideoMME Avg  Retention TFLOPs Failed
    # each cell: score @ the retention its run measured (failed samples)
    assert lines["Full tokens"] == ["58.0 @ 100.0 % (1 failed)", "60.4 @ 100.0 %", "56.1 @ 100.0 %",
                                    "58.9 @ 100.0 % (2 failed)", "58.4", "100.0 %", "40.8", "3"]
    assert lines["↳ paper"] == ["58.3", "60.4", "56.4", "58.6", "58.4", "", "", ""]
    assert lines["↳ Δ vs paper"] == ["-0.3", "0.0", "-0.3", "+0.3", "-0.1", "", "", ""]
    assert lines["AOT 10 %"] == ["57.0", "61.0", "—", "55.0", "—", "≈10 %", "≈3.36", "—"]
    assert lines["↳ paper'"] == ["57.0", "60.6", "54.2", "56.1", "57.0", "", "", ""]
    assert lines["↳ Δ vs paper'"] == ["0.0", "+0.4", "—", "-1.1", "—", "", "", ""]
    assert lines["AOT 25 %"][:5] == ["—"] * 5 and lines["AOT 25 %"][5:7] == ["≈25 %", "≈8.71"]
    assert "↳ paper''" not in lines, "rows without the paper's numbers get no paper line"
    missing = data["missing"]
    assert len(missing) == 20 - 7
    assert any(m.startswith("AOT 10 % / LongVideoBench: no *_results.json") for m in missing)
    assert data["problems"] == []
    assert "(N failed): N samples of that run failed" in render_markdown(data)
    # the AOT paper's own figures name no source: no [n] marks, no source list
    assert data["paper_sources"] == [] and all(r["paper_sources"] is None for r in data["rows"])
    assert "[1]" not in render_markdown(data) and "Sources of the" not in render_markdown(data)
    full = data["rows"][0]
    assert full["retention_source"] == "measured" and full["tflops_source"] == "measured"
    assert data["rows"][4]["tflops_source"] == "estimated"


def test_newest_results_file_wins(ov_runs):
    _write_run(ov_runs, "aot_10pct", "videomme", _results("videomme", "videomme_perception_score,none", 57.5),
               date="20260102_080000")
    older = ov_runs / "aot_10pct" / "videomme" / "other_model"
    older.mkdir()
    old = _results("videomme", "videomme_perception_score,none", 1.0)
    (older / "20251231_235959_results.json").write_text(json.dumps(old))
    assert newest_results(ov_runs / "aot_10pct" / "videomme").name == "20260102_080000_results.json"
    row = gather("llava_ov_7b", ov_runs)["rows"][4]
    assert row["cells"]["VideoMME"]["score"] == pytest.approx(57.5)


def test_percent_and_fraction_scales():
    fraction = Column("E", "egoschema_subset", "score,none", "fraction")
    percent = Column("V", "videomme", "videomme_perception_score,none", "percent")
    assert read_score(_results("egoschema_subset", "score,none", 0.604), fraction) == (pytest.approx(60.4), None)
    assert read_score(_results("videomme", "videomme_perception_score,none", 58.6), percent) == (58.6, None)
    assert read_score(_results("videomme", "videomme_perception_score,none", 0.5), percent) == (0.5, None)
    score, why = read_score(_results("egoschema_subset", "score,none", 60.4), fraction)
    assert score == 60.4 and "above 1" in why
    group = Column("M", "mvbench", "mvbench_accuracy,none", "percent", aggregate="subtask_mean")
    res = _results("mvbench", "mvbench_accuracy,none", None, subtasks={"a": 50.0, "b": 70.0})
    assert read_score(res, group) == (60.0, None)
    res["results"]["mvbench"]["mvbench_accuracy,none"] = 61.0   # a group metric, when there is one, wins
    assert read_score(res, group) == (61.0, None)
    plain = Column("M", "mvbench", "mvbench_accuracy,none", "percent")
    score, why = read_score(_results("mvbench", "mvbench_accuracy,none", None, subtasks={"a": 50.0}), plain)
    assert score is None and "mvbench_accuracy,none" in why


def test_unbounded_scale_is_shown_x100_above_1_too():
    """pycocoevalcap's CIDEr, as lmms-eval's vatex_test returns it, is 0 upwards with no upper bound."""
    cider = Column("VATEX CIDEr", "vatex_test", "vatex_CIDEr,none", "unbounded")
    assert read_score(_results("vatex_test", "vatex_CIDEr,none", 1.315), cider) == (pytest.approx(131.5), None)
    assert read_score(_results("vatex_test", "vatex_CIDEr,none", 0.4), cider) == (pytest.approx(40.0), None)


def test_bad_files_are_problems_not_crashes(ov_runs):
    bad = ov_runs / "aot_25pct" / "mvbench" / MODEL_DIR
    bad.mkdir(parents=True)
    (bad / "20260101_120000_results.json").write_text("{not json")
    _write_run(ov_runs, "aot_25pct", "egoschema", _results("egoschema", "submission,none", 60.0))
    _write_run(ov_runs, "aot_25pct", "videomme", _results("videomme", "videomme_perception_score,none", 50.0),
               efficiency={"format": "something-else/9"})
    data = gather("llava_ov_7b", ov_runs)
    problems = "\n".join(data["problems"])
    assert "AOT 25 % / MVBench" in problems and "unreadable" in problems
    assert "AOT 25 % / EgoSchema" in problems and "task 'egoschema_subset' not in results" in problems
    assert "AOT 25 % / VideoMME" in problems and "something-else/9" in problems
    row = data["rows"][1]
    assert row["cells"]["VideoMME"]["score"] == 50.0 and row["retention_source"] == "nominal"


def test_tflops_from_visual_tokens_when_the_summary_has_none(tmp_path):
    runs = tmp_path / "runs"
    res = _results("aot_smoke_mcq", "acc,none", 0.25)
    eff = _efficiency("20260101_120000_results.json", "aot_smoke_mcq", retention=0.1, tflops=None, failed=1, samples=4)
    eff["overall"]["visual_tokens_mean"] = 160.0
    _write_run(runs, "aot_10pct", "smoke", res, efficiency=eff)
    data = gather("smoke_tiny", runs)
    row = data["rows"][1]
    from visionzip import prefill_flops

    assert row["tflops"] == pytest.approx(prefill_flops(160, layers=2, hidden=64, ffn=128) / 1e12)
    assert row["retention"] == pytest.approx(0.1) and row["failed"] == 1
    lines = _table_lines(render_markdown(data))
    assert lines["AOT 10 %"][:3] == ["25.0 @ 10.0 % (1 failed)", "25.0", "10.0 %"]
    assert lines["Full tokens"] == ["—", "—", "≈100 %", f"≈{gather_mod._fmt_tflops(data['rows'][0]['tflops'])}", "—"]


def test_main_writes_markdown_json_and_plot(ov_runs, tmp_path, capsys):
    out, js, png = tmp_path / "o" / "t.md", tmp_path / "o" / "t.json", tmp_path / "o" / "t.png"
    assert gather_mod.main(["llava_ov_7b", "--runs", str(ov_runs), "--out", str(out), "--json", str(js),
                            "--plot", str(png)]) == 0
    stdout = capsys.readouterr().out
    assert ("| Full tokens | 58.0 @ 100.0 % (1 failed) | 60.4 @ 100.0 % | 56.1 @ 100.0 % | 58.9 @ 100.0 % (2 failed) "
            "| 58.4 |") in stdout
    assert "Missing runs (13):" in stdout
    assert out.read_text() in stdout
    data = json.loads(js.read_text())
    assert data["table"] == "llava_ov_7b" and [r["label"] for r in data["rows"]][0] == "Full tokens"
    assert data["rows"][0]["cells"]["EgoSchema"]["score"] == pytest.approx(60.4)
    assert data["rows"][0]["delta_vs_paper"]["VideoMME"] == pytest.approx(0.3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_main_defaults_into_the_runs_folder_and_survives_an_empty_one(tmp_path, capsys):
    runs = tmp_path / "nothing_yet"
    assert gather_mod.main(["smoke_tiny", "--runs", str(runs)]) == 0
    stdout = capsys.readouterr().out
    assert "| Full tokens | — | — | ≈100 % |" in stdout and "Missing runs (2):" in stdout
    assert {p.name for p in runs.iterdir()} == {"table.md", "table.json", "table.png"}
    assert gather_mod.main(["no_such_table"]) == 2
    assert "unknown table 'no_such_table'" in capsys.readouterr().err


def test_a_table_without_an_average_renders_no_avg_and_no_plot(tmp_path, capsys):
    runs = tmp_path / "generative"
    assert gather_mod.main(["qwen2_5_vl_7b_generative", "--runs", str(runs)]) == 0
    stdout = capsys.readouterr().out
    header = next(line for line in stdout.splitlines() if line.startswith("| Method |"))
    assert "Avg" not in header and header.endswith("| Retention | TFLOPs | Failed |")
    assert "No plot: the table has no Avg to plot (average: false)." in stdout
    assert {p.name for p in runs.iterdir()} == {"table.md", "table.json"}


def test_table_layout_follows_the_config():
    table = load_table("llava_ov_7b")
    data = gather(table, "/nonexistent/runs")
    header = render_markdown(data).splitlines()[2]
    assert header == "| Method | MVBench | EgoSchema | LongVideoBench | VideoMME | Avg | Retention | TFLOPs | Failed |"

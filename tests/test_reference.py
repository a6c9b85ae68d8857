"""The release's logged figures beside the tables: reference rows on an empty results folder, deltas,
the MVBench subtask table with its flags on results written here through lmms-eval's file layout, and
the warnings for runs of another model; the release's own settings as rows. The oracle for the logged
figures is the data file itself, read here without the package's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.eval.gather import gather, render_markdown
from llava.eval.tables import load_table

ROOT = Path(__file__).resolve().parents[1]
LOGS = json.loads((ROOT / "configs" / "eval" / "aot_release_logs.json").read_text())


def _logged(folder: str, name: str) -> dict:
    (run,) = [r for r in LOGS["runs"] if r["file"].startswith(folder) and r["file"].endswith("/" + name)]
    return run


def _mvbench_mean(run: dict) -> float:
    values = [v["mvbench_accuracy,none"] for k, v in run["results"].items() if k.startswith("mvbench_")]
    assert len(values) == 20
    return sum(values) / 20


def test_the_data_file_names_its_source():
    assert "TyroneLi/AOT" in LOGS["source"] and "88455ee" in LOGS["source"]
    assert all(r.get("date") or not r.get("results") for r in LOGS["runs"])


@pytest.mark.parametrize("name", ["llava_ov_7b", "llava_video_7b"])
def test_empty_results_render_the_release_rows(tmp_path, name):
    data = gather(name, tmp_path)
    text = render_markdown(data)
    table = load_table(name)
    folder = table.reference.folder
    row = next(r for r in data["rows"] if r["label"] == "AOT 25 %")
    mv = _logged(folder, "mvbench_25.json")
    assert row["release"]["MVBench"] == pytest.approx(_mvbench_mean(mv))
    lvb = _logged(folder, "longvideo_25.json" if name == "llava_ov_7b" else "longvideo_22-25.json")
    lvb_acc = lvb["results"]["longvideobench_val_v"]["lvb_acc,none"]
    assert row["release"]["LongVideoBench"] == pytest.approx(100 * lvb_acc)
    assert f"| ↳ release log | {_mvbench_mean(mv):.1f} |" in text
    assert "#### MVBench per subtask: AOT 25 %" in text and "| mvbench_action_antonym | — |" in text
    assert row["delta_vs_release"] is None  # nothing of ours yet: no delta
    if name == "llava_ov_7b":  # the release's 10 % logs are the paper's 10 % row
        ten = next(r for r in data["rows"] if r["label"] == "AOT 10 %")
        assert round(ten["release"]["MVBench"], 1) == ten["paper"]["MVBench"] == 57.0
    else:
        assert {"longvideo_25-27.json", "mvbench_23-25.json"} == {Path(f).name for f in data["reference"]["unmatched"]}


def _write_run(runs: Path, row: str, column: str, results: dict, model: str, retention: float) -> Path:
    folder = runs / row / column / "tiny"
    folder.mkdir(parents=True)
    path = folder / "20261201_120000_results.json"
    path.write_text(json.dumps({**results, "config": {"model": model, "model_args": "pretrained=x"}}))
    summary = {"format": "aot-efficiency/1", "results_file": path.name, "source": "samples",
               "overall": {"samples": 200, "failed": 0, "retention_mean": retention, "retention_min": retention - 0.01,
                           "retention_max": retention + 0.02, "retention_std": 0.004}}
    (folder / "20261201_120000_aot_efficiency.json").write_text(json.dumps(summary))
    return path


def test_synthetic_results_render_deltas_subtasks_and_flags(tmp_path):
    folder = load_table("llava_ov_7b").reference.folder
    logged = _logged(folder, "mvbench_15.json")["results"]
    ours = {k: {"mvbench_accuracy,none": v["mvbench_accuracy,none"]} for k, v in logged.items()}
    ours["mvbench_action_count"]["mvbench_accuracy,none"] += 5.0  # one subtask 5 points off: flagged
    ours["mvbench_scene_transition"]["mvbench_accuracy,none"] -= 1.5  # within 2 points: not flagged
    results = {"results": {"mvbench": {"alias": "mvbench"}, **ours}, "group_subtasks": {"mvbench": sorted(ours)}}
    _write_run(tmp_path, "aot_15pct", "mvbench", results, "aot_llava_onevision", 0.152)
    vme = _logged(folder, "videomme_15.json")["results"]["videomme"]["videomme_perception_score,none"]
    _write_run(tmp_path, "aot_15pct", "videomme",
               {"results": {"videomme": {"videomme_perception_score,none": vme - 3.0}}}, "aot_llava_onevision", 0.149)
    # a run of another model in a cell: named, and no delta for it
    lvb = {"results": {"longvideobench_val_v": {"lvb_acc,none": 0.5}}}
    _write_run(tmp_path, "aot_15pct", "longvideobench", lvb, "llava_onevision", 0.15)

    data = gather("llava_ov_7b", tmp_path)
    row = next(r for r in data["rows"] if r["label"] == "AOT 15 %")
    assert row["delta_vs_release"]["MVBench"] == pytest.approx(3.5 / 20)
    assert row["delta_vs_release"]["VideoMME"] == pytest.approx(-3.0)
    assert "LongVideoBench" not in row["delta_vs_release"]
    other = "is a run of model 'llava_onevision', not the table's 'aot_llava_onevision'"
    assert any(other in p for p in data["problems"])
    subtasks = {e["subtask"]: e for e in row["cells"]["MVBench"]["subtask_table"]}
    assert subtasks["mvbench_action_count"]["delta"] == pytest.approx(5.0)
    text = render_markdown(data)
    assert "#### MVBench per subtask: AOT 15 % (⚠: |Δ| > 2 points; 1 flagged)" in text
    section = text.split("#### MVBench per subtask: AOT 15 %")[1].split("####")[0].splitlines()
    assert next(x for x in section if x.startswith("| mvbench_action_count |")).endswith("| +5.0 | ⚠ |")
    assert next(x for x in section if x.startswith("| mvbench_scene_transition |")).endswith("| -1.5 |  |")
    assert "| ↳ Δ vs release | +0.2 | — | — | -3.0 |" in text
    assert "@ 15.2 %" in text  # the measured retention in the cell

    from llava.eval.audit import audit

    report = audit("llava_ov_7b", tmp_path)
    entries = {(e["row"], e["benchmark"]): e for e in report["entries"]}
    mvbench = entries[("AOT 15 %", "MVBench")]
    assert mvbench["status"] == "ok" and mvbench["retention_std"] == 0.004
    assert "not audited" in entries[("AOT 15 %", "LongVideoBench")]["status"]


def test_a_row_off_its_label_is_flagged(tmp_path):
    results = {"results": {"videomme": {"videomme_perception_score,none": 55.0}}}
    _write_run(tmp_path, "aot_25pct", "videomme", results, "aot_llava_onevision", 0.233)
    from llava.eval.audit import audit, render

    report = audit("llava_ov_7b", tmp_path)
    assert report["flagged"] == ["AOT 25 % / VideoMME"]
    row = "| AOT 25 % | 25 % | VideoMME | 200 | 23.3 % | 22.3 % | 25.3 % | 0.40 % | -1.7 | ⚠ off its label |"
    assert row in render(report)


def test_the_release_settings_are_rows():
    ov = load_table("llava_ov_7b")
    logged_args = _logged(ov.reference.folder, "mvbench_10.json")["model_args"]
    logged = {k: v for k, v in (p.split("=") for p in logged_args.split(","))}
    assert {k: str(v) for k, v in ov.model_args} == logged  # the OneVision table runs the logged model_args
    video = load_table("llava_video_7b")
    k180 = video.row("AOT k180 (release)")
    assert k180.compression == "paper_video_k180"
    import visionzip as vz

    cfg = vz.get_preset("paper_video_k180")
    settings = (cfg.num_anchors, cfg.pool_mode.value, cfg.newline_position.value, cfg.inter_frame)
    assert settings == (180, "average", "grid", False)


def test_reference_rows_and_columns_must_exist(tmp_path):
    from llava.eval.tables import TableError

    text = (ROOT / "configs" / "eval" / "llava_ov_7b.yaml").read_text().replace('AOT 25 %: "25"', 'AOT 30 %: "25"')
    path = tmp_path / "llava_ov_7b.yaml"
    path.write_text(text)
    with pytest.raises(TableError, match=r"reference.rows.AOT 30 %.*is not a row"):
        load_table(path)


def test_logged_runs_of_a_benchmark_the_table_lacks_are_named(tmp_path):
    """A table without VideoMME beside the OneVision logs: the logged videomme runs are named, never
    matched to another column."""
    import yaml

    data = yaml.safe_load((ROOT / "configs" / "eval" / "llava_ov_7b.yaml").read_text())
    data["columns"] = [c for c in data["columns"] if c["label"] != "VideoMME"]
    for row in data["rows"]:
        if isinstance(row.get("paper"), dict):
            row["paper"].pop("VideoMME", None)
        if isinstance(row.get("compression"), dict):
            row["compression"].pop("VideoMME", None)
    data["reference"]["columns"].pop("VideoMME")
    path = tmp_path / "llava_ov_7b.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = gather(load_table(path), tmp_path / "runs")
    named = [w for w in out["warnings"] if "videomme" in w]
    assert len(named) == 4 and all("which the table does not have; not shown" in w for w in named)
    assert all("VideoMME" not in (r["release"] or {}) for r in out["rows"])

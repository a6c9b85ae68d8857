"""End to end through the real lmms-eval command line (CPU, tiny checkpoint, the offline smoke task):
the plugin models load from the entry point, results and samples are saved, the per-run efficiency
summary is written next to the results, and bad videos fail alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TASK = ROOT / "lmms_eval_tasks" / "aot_smoke"


def _lmms_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_bad_videos_are_counted_and_the_run_finishes(tmp_path, capsys):
    """A task with a missing and a corrupt video: both samples fail alone (a wrong option letter, scored
    wrong), the others are answered, lmms-eval's results carry the failed count, and the summary built
    from the saved run reports the failures."""
    task_dir = tmp_path / "tasks" / "bad"
    shutil.copytree(SMOKE_TASK, task_dir, ignore=shutil.ignore_patterns("*.mp4", "README.md", "__pycache__"))
    shutil.copy(SMOKE_TASK / "red_right.mp4", task_dir / "red_right.mp4")
    (task_dir / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 200)
    yaml = (task_dir / "aot_smoke_mcq.yaml").read_text().replace("task: aot_smoke_mcq", "task: aot_test_bad_videos")
    (task_dir / "aot_smoke_mcq.yaml").write_text(yaml)
    docs = [json.loads(line) for line in (SMOKE_TASK / "data.jsonl").read_text().splitlines() if line.strip()]
    good = [d for d in docs if d["video"] == "red_right.mp4"][:2]
    bad = [dict(good[0], id="missing", video="missing.mp4"), dict(good[0], id="corrupt", video="corrupt.mp4")]
    (task_dir / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in [good[0], *bad, good[1]]))

    ckpt = write_tiny_checkpoint(tmp_path / "tiny")
    out = tmp_path / "out"
    _lmms_eval(
        "--model", "aot_llava_onevision",
        "--model_args",
        f"pretrained={ckpt},compression=paper_ov_10pct,max_frames_num=8,model_name=llava_qwen,torch_dtype=float32",
        "--tasks", "aot_test_bad_videos", "--include_path", str(tmp_path / "tasks"),
        "--batch_size", "2", "--device", "cpu", "--output_path", str(out), "--log_samples",
        cwd=tmp_path,
    )
    results = json.loads(_only(out, "*_results.json").read_text())
    assert results["config"]["model"] == "aot_llava_onevision"
    assert results["n-samples"]["aot_test_bad_videos"]["effective"] == 4
    samples = [json.loads(x) for x in _only(out, "*_samples_aot_test_bad_videos.jsonl").read_text().splitlines()]
    by_doc = {s["doc_id"]: s for s in samples}
    for doc_id in (1, 2):
        counts = by_doc[doc_id]["token_counts"][0]
        assert counts["failed"] is True and by_doc[doc_id]["acc"] == 0.0
        answer = by_doc[doc_id]["filtered_resps"]
        assert answer in "ABC" and answer != by_doc[doc_id]["target"]
    assert "missing.mp4" in by_doc[1]["token_counts"][0]["error"]
    assert "corrupt.mp4" in by_doc[2]["token_counts"][0]["error"]
    for doc_id in (0, 3):
        counts = by_doc[doc_id]["token_counts"][0]
        assert counts["failed"] is False and 0 < counts["visual_tokens"] < counts["visual_tokens_plain"]

    throughput = results["throughput"]   # the plugin's run figures, in lmms-eval's own results
    assert (throughput["avg_samples"], throughput["avg_failed_samples"]) == (4, 2)
    assert 0 < throughput["avg_retention"] < 1

    # `aot report` builds the summary from the saved results and samples
    from llava.cli import main

    assert not list(out.rglob("*_aot_efficiency.json"))
    assert main(["report", str(out)]) == 0
    assert "2 sample(s) failed and were scored as wrong" in capsys.readouterr().out
    summary = json.loads(_only(out, "*_aot_efficiency.json").read_text())
    task = summary["tasks"]["aot_test_bad_videos"]
    assert (task["samples"], task["failed"], sorted(task["failed_doc_ids"])) == (4, 2, [1, 2])
    assert summary["source"] == "samples" and summary["compression"] == "paper_ov_10pct"


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    from llava.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "no lmms-eval results" in capsys.readouterr().err


def test_readme_smoke_evaluation(tmp_path):
    """The README's main job after set-up: scripts/eval/smoke.sh runs the real lmms-eval CLI six times (full
    tokens, AOT; QA, grounding, captioning) on the tiny model and prints the results with the efficiency columns."""
    env = {**os.environ, "OUTPUT_DIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "scripts/eval/smoke.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| Method | Smoke | Avg | Retention | TFLOPs | Failed |" in out  # the gathered table
    assert out.count("visual tokens (plain → kept) | retention | prefill TFLOPs") == 6  # one summary per run
    assert "smoke_tiny: 2 runs, 2 finished now" in out
    # the other two task families, each its own table, scored by lmms-eval's Charades-STA and YouCook2 code
    families = (("grounding", "Grounding mIoU", "aot_smoke_grounding", "charades_sta_mIOU,none"),
                ("caption", "Caption CIDEr", "aot_smoke_caption", "CIDEr,none"))
    for family, column, task, metric in families:
        assert f"smoke_tiny_{family}: 2 runs, 2 finished now" in out
        data = json.loads((tmp_path / family / "table.json").read_text())
        plain, compressed = (row["cells"][column] for row in data["rows"])
        assert plain["samples"] == compressed["samples"] == 4 and plain["failed"] == compressed["failed"] == 0
        assert plain["retention_mean"] == 1.0 and 0.05 < compressed["retention_mean"] < 0.2
        for cell in (plain, compressed):
            results = json.loads(Path(cell["results_file"]).read_text())
            assert results["results"][task][metric] == cell["score"]
            assert results["throughput"]["avg_decode_ms_per_token"] > 0

    table = json.loads((tmp_path / "table.json").read_text())
    full, aot = (row["cells"]["Smoke"] for row in table["rows"])
    assert full["compression"] == "none" and aot["compression"] == "paper_ov_10pct"
    assert full["samples"] == aot["samples"] == 4 and full["failed"] == aot["failed"] == 0
    assert full["visual_tokens_mean"] == full["visual_tokens_plain_mean"] == 32 * 196 + 1
    assert full["retention_mean"] == 1.0 and 0.05 < aot["retention_mean"] < 0.2
    assert aot["prefill_tflops_mean"] < full["prefill_tflops_mean"] / 5
    for cell in (full, aot):
        results = json.loads(Path(cell["results_file"]).read_text())
        assert results["results"]["aot_smoke_mcq"]["acc,none"] == cell["score"]
        assert results["efficiency"]["overall"]["docs_with_token_counts"] == 4.0  # lmms-eval's own accounting
        assert results["throughput"]["avg_visual_tokens"] == pytest.approx(cell["visual_tokens_mean"])
        summary = json.loads(Path(cell["efficiency_file"]).read_text())
        assert summary["results_file"] == Path(cell["results_file"]).name and summary["source"] == "samples"
    assert (tmp_path / "table.md").is_file() and (tmp_path / "table.png").stat().st_size > 10_000

    # the retention audit on the smoke evaluation's outputs: per row, the measured retention and its spread
    from llava.eval.audit import audit, render

    report = audit("smoke_tiny", tmp_path)
    by_row = {e["row"]: e for e in report["entries"]}
    assert by_row["Full tokens"]["status"] == "ok" and by_row["Full tokens"]["mean"] == 1.0
    assert by_row["Full tokens"]["retention_min"] == by_row["Full tokens"]["retention_max"] == 1.0
    aot_entry = by_row["AOT 10 %"]
    assert aot_entry["samples"] == 4 and aot_entry["mean"] == pytest.approx(aot["retention_mean"])
    assert aot_entry["retention_min"] <= aot_entry["mean"] <= aot_entry["retention_max"]
    # the preset's retention on these synthetic clips is not its LLaVA-OV-7B label: the audit says so
    assert aot_entry["flag"] is (abs(aot_entry["mean"] - 0.10) > 0.01)
    assert "### Retention audit" in render(report)

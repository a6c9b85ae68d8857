"""A failed sample scores as a wrong answer in the task's own aggregated score.

The oracles are lmms-eval 0.7.3's own ``process_results`` and aggregation functions of every benchmark
the paper tables use (MVBench, VideoMME, LongVideoBench, EgoSchema), imported from the installed
package; and the real lmms-eval command line on an MVBench-scored task with a missing video.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from llava.eval.failures import wrong_answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "lmms_eval_tasks" / "aot_smoke"
LETTERS = "ABCDE"


def _mvbench_docs():
    colours = ["red", "blue", "green", "pink"]
    return [{"candidates": colours, "answer": colours[i]} for i in range(4)]


def _videomme_docs():
    from lmms_eval.tasks.videomme import utils as u

    return [{"question_id": f"q{i}", "duration": u.VIDEO_TYPE[0], "domain": u.CATEGORIES[0],
             "sub_category": u.SUB_CATEGORIES[0], "task_type": u.TASK_CATEGORIES[0], "answer": LETTERS[i],
             "videoID": f"v{i}"} for i in range(4)]


def _lvb_docs():
    return [{"id": f"l{i}", "duration_group": 15, "question_category": "T2O", "correct_choice": i,
             **{f"option{k}": f"thing {k}" for k in range(4)}, "option4": "N/A"} for i in range(4)]


def _egoschema_docs():
    return [{"video_idx": f"e{i}", "answer": str(i), "option": [f"{k}. choice number {k}" for k in range(5)]}
            for i in range(4)]


def _benchmarks():
    from lmms_eval.tasks.egoschema import utils as ego
    from lmms_eval.tasks.longvideobench import utils as lvb
    from lmms_eval.tasks.mvbench import utils as mvb
    from lmms_eval.tasks.videomme import utils as vmme

    return {
        # task name: (docs, the correct letter of a doc, process_results, metric key, aggregate, full marks)
        "mvbench_action_sequence": (_mvbench_docs(), lambda d: LETTERS[d["candidates"].index(d["answer"])],
                                    mvb.mvbench_process_results, "mvbench_accuracy", mvb.mvbench_aggregate_results,
                                    100.0),
        "videomme": (_videomme_docs(), lambda d: d["answer"], vmme.videomme_process_results,
                     "videomme_perception_score", vmme.videomme_aggregate_results, 100.0),
        "longvideobench_val_v": (_lvb_docs(), lambda d: LETTERS[d["correct_choice"]],
                                 lvb.longvideobench_process_results,
                                 "lvb_acc", lvb.longvideobench_aggregate_results, 1.0),
        "egoschema_subset": (_egoschema_docs(), lambda d: LETTERS[int(d["answer"])],
                             ego.egoschema_process_results_generation, "score",
                             lambda rs: ego.egoschema_aggregate_score(rs, None), 1.0),
    }


@pytest.mark.parametrize("task", ["mvbench_action_sequence", "videomme", "longvideobench_val_v", "egoschema_subset"])
def test_a_failed_sample_lowers_the_benchmark_score_as_a_wrong_answer(task):
    docs, correct, process, key, aggregate, full = _benchmarks()[task]
    answers = [correct(d) for d in docs]
    assert aggregate([process(d, [a])[key] for d, a in zip(docs, answers)]) == pytest.approx(full)
    failed = wrong_answer(task, docs[1])
    assert failed in LETTERS and failed != answers[1]
    scored = [process(d, [failed if i == 1 else a])[key] for i, (d, a) in enumerate(zip(docs, answers))]
    assert aggregate(scored) == pytest.approx(full * 3 / 4)   # three of four right: the failure counts as wrong


def test_why_not_an_empty_answer():
    """lmms-eval's MVBench aggregation leaves empty answers out, so an empty answer raised the score."""
    docs, correct, process, key, aggregate, _ = _benchmarks()["mvbench_action_sequence"]
    scored = [process(d, ["" if i == 1 else correct(d)])[key] for i, d in enumerate(docs)]
    assert aggregate(scored) == 100.0


def test_other_tasks_and_documents_without_an_answer_get_an_empty_answer():
    assert wrong_answer("egoschema", {"video_idx": "x", "option": ["0. a"] * 5}) == ""   # the server-scored test set
    assert wrong_answer("mme", {"answer": "A"}) == ""
    assert wrong_answer("mvbench_x", {"candidates": ["a", "b"]}) == ""                     # no answer field
    assert wrong_answer("videomme", None) == ""
    assert wrong_answer("aot_videomme", {"answer": "A"}) == "B"
    assert wrong_answer("aot_smoke_mcq", {"answer": "B", "candidates": ["x", "y", "z"]}) == "A"
    # the generative smoke tasks answer "" (their scorers' worst), even for a document that has a letter
    assert wrong_answer("aot_smoke_grounding", {"answer": "B", "candidates": ["x", "y"]}) == ""
    assert wrong_answer("aot_smoke_caption", {"answer": "B", "candidates": ["x", "y"]}) == ""


def test_missing_video_counts_as_wrong_in_mvbench_accuracy_through_the_cli(tmp_path):
    """Through the real lmms-eval CLI: MVBench's own aggregation of a run with a missing video equals
    100 × (right answers) / (all samples), the failed sample included and scored 0."""
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    task_dir = tmp_path / "tasks" / "mvbench_check"
    shutil.copytree(ROOT / "tests" / "data" / "mvbench_check", task_dir)
    smoke = [json.loads(line) for line in (SMOKE / "data.jsonl").read_text().splitlines() if line.strip()]
    docs = []
    for d in smoke[:4]:
        shutil.copy(SMOKE / d["video"], task_dir / d["video"])
        docs.append({"video": d["video"], "question": d["question"], "candidates": d["candidates"],
                     "answer": d["candidates"][LETTERS.index(d["answer"])]})
    docs[2]["video"] = "missing.mp4"
    (task_dir / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    ckpt = write_tiny_checkpoint(tmp_path / "tiny")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "aot_llava_onevision",
         "--model_args", f"pretrained={ckpt},max_frames_num=8,model_name=llava_qwen,torch_dtype=float32",
         "--tasks", "mvbench_aot_check", "--include_path", str(tmp_path / "tasks"), "--batch_size", "2",
         "--device", "cpu", "--output_path", str(out), "--log_samples"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    samples = {s["doc_id"]: s for s in map(json.loads, next(out.rglob("*_samples_mvbench_aot_check.jsonl")).open())}
    failed = samples[2]
    assert failed["token_counts"][0]["failed"] is True and "missing.mp4" in failed["token_counts"][0]["error"]
    assert failed["mvbench_accuracy"]["pred_answer"] != "" and failed["mvbench_accuracy"]["score"] == 0
    right = sum(s["mvbench_accuracy"]["score"] for s in samples.values())
    assert results["results"]["mvbench_aot_check"]["mvbench_accuracy,none"] == pytest.approx(100 * right / 4)
    assert results["throughput"]["avg_failed_samples"] == 1 and results["throughput"]["avg_samples"] == 4

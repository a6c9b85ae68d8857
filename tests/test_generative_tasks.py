"""The offline generative tasks ``aot_smoke_grounding`` and ``aot_smoke_caption``, scored by lmms-eval's own
Charades-STA and YouCook2 functions, through the user's path: ``python -m llava.eval.lmms`` (lmms-eval's CLI)
with the plugin, a tiny random-weight LLaVA-OneVision checkpoint and a copy of the task folders in which one
document names a missing video. lmms-eval's scorers are the oracle for every score.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("lmms_eval")

from lmms_eval.tasks import TaskManager, get_task_dict  # noqa: E402
from lmms_eval.tasks.charades_sta import utils as charades  # noqa: E402
from lmms_files import load_module  # noqa: E402 - tests/lmms_files.py
from lmms_files import results as _results  # noqa: E402 - tests/lmms_files.py
from lmms_files import samples as _samples  # noqa: E402
from lmms_files import text as _text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "lmms_eval_tasks"
GROUNDING, CAPTION = "aot_smoke_grounding", "aot_smoke_caption"
FOLDERS = {GROUNDING: TASKS_DIR / GROUNDING, CAPTION: TASKS_DIR / CAPTION}
VIDEO_FIELD = {GROUNDING: "video", CAPTION: "video_path"}
MODEL_ARGS = "max_frames_num=8,torch_dtype=float32,conv_template=qwen_1_5,model_name=llava_qwen"
SETTINGS = ("none", "aot@1.0", "aot@0.25")
N_DOCS, MISSING = 3, 1  # the copies hold the first 3 documents of each task; document 1 names a missing video
CHARADES_METRICS = [f"charades_sta_{m}" for m in charades.CHARADES_STA_METRICS]
COCO_METRICS = ["Bleu_4", "Bleu_3", "Bleu_2", "Bleu_1", "METEOR", "ROUGE_L", "CIDEr"]  # youcook2_val.yaml's


grounding_utils = load_module("aot_smoke_grounding_utils", FOLDERS[GROUNDING] / "utils.py")
caption_utils = load_module("aot_smoke_caption_utils", FOLDERS[CAPTION] / "utils.py")
make_videos = load_module("aot_smoke_grounding_make_videos", FOLDERS[GROUNDING] / "make_videos.py")


def _docs(task: str) -> list[dict]:
    return [json.loads(line) for line in (FOLDERS[task] / "data.jsonl").read_text().splitlines() if line.strip()]


def _task_doc(task: str, index: int) -> dict:
    """Document ``index`` of the copies :func:`_task_copies` writes."""
    doc = _docs(task)[index]
    if index == MISSING:
        doc[VIDEO_FIELD[task]] = "missing.mp4"
    return doc


def _youcook2_aggregate(metric: str, entries: list[dict]) -> float:
    return float(caption_utils.youcook2.youcook2_aggregate_results(entries, metric))


# ---------------------------------------------------------------------------------------------------
# the tasks as lmms-eval loads them, without a model
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Both tasks as lmms-eval builds them, from another working directory, with a private datasets cache."""
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets_cache")))
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))
        return get_task_dict([GROUNDING, CAPTION], manager)


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_the_task_loads_with_its_documents_and_videos(loaded, task):
    built = loaded[task]
    docs = list(built.test_docs())
    assert [d["id"] for d in docs] == [d["id"] for d in _docs(task)]
    for doc in docs:
        (path,) = built.doc_to_visual(doc)
        assert Path(path).is_absolute() and Path(path).is_file()


def test_grounding_prompt_and_target_are_charades_stas(loaded):
    built = loaded[GROUNDING]
    doc = next(iter(built.test_docs()))
    prompts = yaml.safe_load("\n".join(
        line for line in (Path(charades.__file__).parent / "charades.yaml").read_text().splitlines()
        if "!function" not in line))["lmms_eval_specific_kwargs"]["default"]
    assert built.doc_to_text(doc) == charades.temporal_grounding_doc_to_text(doc, prompts)
    assert built.doc_to_text(doc).endswith(f"{doc['caption']}. {prompts['post_prompt']}")
    assert built.doc_to_target(doc) == doc["timestamp"]


def test_caption_prompt_is_youcook2s(loaded):
    doc = next(iter(loaded[CAPTION].test_docs()))
    assert loaded[CAPTION].doc_to_text(doc) == "Provide a one-sentence caption for the provided video."


@pytest.mark.parametrize("task, utils", [(GROUNDING, grounding_utils), (CAPTION, caption_utils)])
def test_a_missing_video_raises_naming_the_file(task, utils):
    doc = {**_docs(task)[0], VIDEO_FIELD[task]: "nowhere.mp4"}
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        utils.doc_to_visual(doc)


def test_grounding_clips_show_the_square_exactly_during_the_event():
    import av

    docs = {d["video"]: d for d in _docs(GROUNDING)}
    assert sorted(docs) == sorted(make_videos.EVENTS)
    background = np.array(make_videos.smoke.BACKGROUND, dtype=np.int16)
    for name, event in make_videos.EVENTS.items():
        assert docs[name]["timestamp"] == [event.t0, event.t1]
        with av.open(str(FOLDERS[GROUNDING] / name)) as container:
            frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
        assert len(frames) == make_videos.FRAMES
        for i, frame in enumerate(frames):
            assert np.abs(frame - make_videos.event_frame(event, i)).mean() < 4, (name, i)
            shown = bool((np.abs(frame - background).max(axis=-1) > 100).sum() > 100)
            assert shown == (event.t0 <= i / make_videos.FPS < event.t1), (name, i)


def test_the_right_interval_scores_full_marks_with_charades_sta_scorer():
    docs = _docs(GROUNDING)
    right = [charades.temporal_grounding_process_results_generation(
        d, [f"The event happens in the {d['timestamp'][0]} - {d['timestamp'][1]} seconds."]) for d in docs]
    entries = [r["charades_sta_mIOU"] for r in right]
    assert grounding_utils.temporal_grounding_aggregate_miou(entries, None) == pytest.approx(100.0)
    assert grounding_utils.temporal_grounding_aggregate_iou7(entries, None) == pytest.approx(100.0)
    empty = [charades.temporal_grounding_process_results_generation(d, [""])["charades_sta_mIOU"] for d in docs]
    assert grounding_utils.temporal_grounding_aggregate_miou(empty, None) == 0.0


def test_the_reference_caption_scores_full_marks_with_youcook2s_scorer():
    entries = [caption_utils.youcook2_process_results(d, [d["sentence"]])["ROUGE_L"] for d in _docs(CAPTION)]
    assert _youcook2_aggregate("ROUGE_L", entries) == pytest.approx(100.0)
    assert _youcook2_aggregate("Bleu_4", entries) == pytest.approx(100.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------------
# through python -m llava.eval.lmms: one run of both tasks per compression setting
# ---------------------------------------------------------------------------------------------------
def _task_copies(root: Path) -> Path:
    """``root/tasks`` with both tasks' first ``N_DOCS`` documents (document ``MISSING`` names a missing video)
    and the ``aot_smoke`` clips the captioning task reads."""
    import shutil

    tasks = root / "tasks"
    for folder in ("aot_smoke", GROUNDING, CAPTION):
        shutil.copytree(TASKS_DIR / folder, tasks / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for task in (GROUNDING, CAPTION):
        docs = _docs(task)[:N_DOCS]
        docs[MISSING][VIDEO_FIELD[task]] = "missing.mp4"
        (tasks / task / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return tasks


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """``{compression: output folder}`` of one evaluation of both tasks per setting in :data:`SETTINGS`."""
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("generative")
    ckpt = write_tiny_checkpoint(root / "ckpt")
    tasks = _task_copies(root)
    out = {}
    for compression in SETTINGS:
        folder = root / compression.replace("@", "_")
        proc = subprocess.run(
            [sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision",
             "--model_args", f"pretrained={ckpt},{MODEL_ARGS},compression={compression}",
             "--tasks", f"{GROUNDING},{CAPTION}", "--include_path", str(tasks), "--batch_size", "1",
             "--device", "cpu", "--gen_kwargs", "max_new_tokens=24", "--output_path", str(folder), "--log_samples"],
            capture_output=True, text=True, timeout=900, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[compression] = folder
    return out


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_full_retention_answers_exactly_as_no_compression(runs, task):
    plain, full = _samples(runs["none"], task), _samples(runs["aot@1.0"], task)
    assert sorted(plain) == sorted(full) == list(range(N_DOCS))
    for doc_id in plain:
        assert _text(full[doc_id]) == _text(plain[doc_id]), doc_id
        if doc_id != MISSING:
            assert len(_text(plain[doc_id])) > 0
            assert full[doc_id]["token_counts"][0]["output_tokens"] == 24
            assert full[doc_id]["token_counts"][0]["retention"] == 1.0
    # the answers depend on the visual tokens, so the equality above is a real check
    quarter = _samples(runs["aot@0.25"], task)
    assert any(_text(quarter[d]) != _text(plain[d]) for d in plain if d != MISSING)


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_a_quarter_retention_keeps_a_quarter_of_the_visual_tokens(runs, task):
    samples = _samples(runs["aot@0.25"], task)
    records = [s["token_counts"][0] for d, s in samples.items() if d != MISSING]
    assert len(records) == N_DOCS - 1
    for record in records:
        assert record["compression"] == "aot@0.25" and not record["failed"]
        assert record["retention"] == pytest.approx(0.25, abs=0.05)
        assert record["visual_tokens"] < record["visual_tokens_plain"]


@pytest.mark.parametrize("compression", SETTINGS)
def test_the_cost_of_long_answers_is_recorded_per_sample_and_per_run(runs, compression):
    records = [s["token_counts"][0] for task in (GROUNDING, CAPTION)
               for s in _samples(runs[compression], task).values()]
    answered = [r for r in records if not r["failed"]]
    assert len(answered) == 2 * (N_DOCS - 1)
    for r in answered:
        assert r["output_tokens"] == 24 and r["decode_ms_per_token"] > 0
        # one decode step per token after the first, all inside the decode time of the call
        assert r["decode_ms_per_token"] * (r["output_tokens"] - 1) <= r["decode_ms"] * (1 + 1e-9)
        # end to end: the video's load plus the generate call (time to first token, then decode)
        assert r["e2e_ms"] == pytest.approx(r["load_ms"] + r["ttft_ms"] + r["decode_ms"], rel=1e-9)
    throughput = _results(runs[compression])["throughput"]
    mean = sum(r["decode_ms_per_token"] for r in answered) / len(answered)
    assert throughput["avg_decode_ms_per_token"] == pytest.approx(mean, rel=1e-9)
    assert throughput["avg_output_tokens"] == 24
    assert throughput["avg_e2e_ms"] == pytest.approx(sum(r["e2e_ms"] for r in answered) / len(answered), rel=1e-9)
    report = subprocess.run([sys.executable, "-m", "llava.cli", "report", str(runs[compression])],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| generated tokens | decode ms/token | e2e s |" in report.stdout


@pytest.mark.parametrize("compression", SETTINGS)
@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_a_missing_video_fails_its_sample_alone(runs, task, compression):
    samples = _samples(runs[compression], task)
    assert sorted(samples) == list(range(N_DOCS))
    failed = samples[MISSING]["token_counts"][0]
    assert failed["failed"] is True and failed["retention"] is None
    assert "FileNotFoundError" in failed["error"] and "missing.mp4" in failed["error"]
    assert _text(samples[MISSING]) == ""
    assert all(not s["token_counts"][0]["failed"] for d, s in samples.items() if d != MISSING)


def test_a_failed_grounding_sample_scores_iou_0(runs):
    samples = _samples(runs["aot@0.25"], GROUNDING)
    results = _results(runs["aot@0.25"])["results"][GROUNDING]
    for metric, aggregate in zip(CHARADES_METRICS, (
            grounding_utils.temporal_grounding_aggregate_iou3, grounding_utils.temporal_grounding_aggregate_iou5,
            grounding_utils.temporal_grounding_aggregate_iou7, grounding_utils.temporal_grounding_aggregate_miou)):
        entries = [samples[d][metric] for d in sorted(samples)]
        assert results[f"{metric},none"] == pytest.approx(aggregate(entries, None))
        # the failed doc's answer, replaced by the right interval, adds exactly its share: it counted 0
        doc = _task_doc(GROUNDING, MISSING)
        right = charades.temporal_grounding_process_results_generation(
            doc, [f"The event happens in the {doc['timestamp'][0]} - {doc['timestamp'][1]} seconds."])[metric]
        fixed = [right if d == MISSING else samples[d][metric] for d in sorted(samples)]
        assert aggregate(fixed, None) == pytest.approx(aggregate(entries, None) + 100 / N_DOCS)


def test_a_failed_caption_scores_as_an_empty_caption(runs):
    samples = _samples(runs["aot@0.25"], CAPTION)
    results = _results(runs["aot@0.25"])["results"][CAPTION]
    reference = _task_doc(CAPTION, MISSING)["sentence"]
    for metric in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        entries = [samples[d][metric] for d in sorted(samples)]
        empty = [{**e, "pred": ""} if d == MISSING else e for d, e in zip(sorted(samples), entries)]
        logged = results[f"{metric},none"]
        assert logged == pytest.approx(_youcook2_aggregate(metric, entries), abs=1e-9)
        assert logged == pytest.approx(_youcook2_aggregate(metric, empty), abs=1e-9)
        if metric in ("METEOR", "ROUGE_L"):  # the right caption for the failed doc would have scored more
            right = [{**e, "pred": reference} if d == MISSING else e for d, e in zip(sorted(samples), entries)]
            assert _youcook2_aggregate(metric, right) > logged


@pytest.mark.parametrize("task, metrics", [(GROUNDING, CHARADES_METRICS), (CAPTION, COCO_METRICS)])
def test_the_results_name_lmms_evals_metrics(runs, task, metrics):
    results = _results(runs["none"])["results"][task]
    named = sorted(k.removesuffix(",none") for k in results if k.endswith(",none") and "_stderr" not in k)
    assert named == sorted(metrics)
    assert all(isinstance(results[f"{m},none"], float) for m in metrics)


def _no_java_path(tmp_path: Path) -> str:
    """This PATH with ``java`` taken out (a machine without a Java runtime): each folder that holds one is
    replaced by a folder of links to everything else in it."""
    import os
    import shutil

    folders = []
    for i, folder in enumerate(f for f in os.environ.get("PATH", "").split(os.pathsep) if f):
        if (Path(folder) / "java").exists():
            shadow = tmp_path / f"path{i}"
            shadow.mkdir()
            for entry in Path(folder).iterdir():
                if entry.name != "java":
                    (shadow / entry.name).symlink_to(entry)
            folder = str(shadow)
        folders.append(folder)
    path = os.pathsep.join(folders)
    assert shutil.which("java", path=path) is None
    return path


def test_a_captioning_run_without_java_stops_before_the_model_loads(tmp_path):
    import os

    env = dict(os.environ, PATH=_no_java_path(tmp_path))
    run = subprocess.run(
        [sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision", "--model_args",
         f"pretrained={tmp_path / 'no-checkpoint'},{MODEL_ARGS}", "--tasks", f"{GROUNDING},{CAPTION}",
         "--include_path", str(TASKS_DIR), "--device", "cpu", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"['{CAPTION}'] are scored by pycocoevalcap" in run.stderr
    assert "sudo apt-get install -y default-jre-headless" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing written, no model read
    grounding = subprocess.run(
        [sys.executable, "-c", "from llava.eval.task_names import check_scorer_tools as c; c(['aot_smoke_grounding'])"],
        capture_output=True, text=True, timeout=120, env=env)
    assert grounding.returncode == 0, grounding.stderr  # grounding is scored in Python: no Java asked for


def test_a_captioning_table_without_java_stops_before_any_evaluation(tmp_path):
    import os

    table = tmp_path / "caption.yaml"
    table.write_text(yaml.safe_dump({
        "name": "caption", "title": "captioning", "model": "aot_llava_onevision",
        "model_args": {"pretrained": str(tmp_path / "no-checkpoint"), "max_frames_num": 8}, "launcher": "python",
        "batch_size": 1, "lmms_args": {"device": "cpu", "include_path": str(TASKS_DIR)},
        "model_shape": {"layers": 2, "hidden": 64, "ffn": 128, "tokens_per_frame": 196},
        "output_dir": str(tmp_path / "runs"),
        "columns": [{"label": "Caption", "task": CAPTION, "metric": "CIDEr,none", "scale": "percent"}],
        "rows": [{"label": "Full", "retention": 1.0, "compression": "none"}],
    }, sort_keys=False))
    env = dict(os.environ, PATH=_no_java_path(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "eval" / "_run_table.sh"), str(table)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Full / Caption:" in run.stderr and "default-jre-headless" in run.stderr
    assert not (tmp_path / "runs").exists()

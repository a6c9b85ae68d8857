"""A video shorter than ``--max-frames`` is repeated to fill the frames: ``aot infer``'s record states the
distinct frames read (``frames``) beside the frames the model encoded (``frames_sampled``), and the
repeat warning reaches stderr, also once lmms-eval (which ignores every ``warnings`` warning) is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.video import load_video, write_synthetic_video

FRAMES = 8
WARNING = f"has only 1 frames but {FRAMES} were requested"


@pytest.fixture(scope="module")
def one_frame(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("frames") / "one.mp4", frames=1, seed=0)


def test_the_clip_counts_the_distinct_frames_it_read(one_frame, tmp_path):
    with pytest.warns(UserWarning, match=WARNING):
        clip = load_video(one_frame, max_frames=FRAMES)
    assert clip.num_frames == FRAMES and clip.frames_read == 1
    longer = load_video(write_synthetic_video(tmp_path / "long.mp4", frames=3 * FRAMES, seed=1), max_frames=FRAMES)
    assert longer.num_frames == longer.frames_read == FRAMES


def test_aot_infer_records_the_frames_read_and_shows_the_warning(one_frame, tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "stats.json"
    run = subprocess.run(
        [sys.executable, "-m", "llava.cli", "infer", "--model", str(ckpt), "--video", str(one_frame), "--question",
         "What moves?", "--compression", "none", "--max-frames", str(FRAMES), "--dtype", "float32", "--device", "cpu",
         "--max-new-tokens", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    stats = json.loads(out.read_text())
    assert stats["frames"] == 1 and stats["frames_sampled"] == FRAMES
    assert WARNING in run.stderr
    assert "| frames read" in run.stdout and "| frames sampled (repeats included)" in run.stdout


def test_the_warning_reaches_stderr_under_lmms_eval(one_frame):
    pytest.importorskip("lmms_eval")
    code = ("import lmms_eval.utils, lmms_eval.evaluator\n"  # lmms-eval's own filters: every warning ignored
            "from llava.video import load_video\n"
            f"clip = load_video({str(one_frame)!r}, max_frames={FRAMES})\n"
            "print(clip.frames_read)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1" and WARNING in run.stderr


def test_the_plugin_records_the_frames_read_through_lmms_eval(one_frame, tmp_path):
    """``python -m llava.eval.lmms`` (lmms-eval's CLI) on a copy of the smoke task whose first video has one
    frame: its logged sample says ``frames: 1`` beside ``frames_sampled: 8``, and the warning is on stderr."""
    pytest.importorskip("lmms_eval")
    import shutil
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "lmms_eval_tasks" / "aot_smoke"
    tasks = tmp_path / "tasks" / "aot_smoke"
    shutil.copytree(smoke, tasks, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(one_frame, tasks / "one.mp4")
    doc = json.loads((smoke / "data.jsonl").read_text().splitlines()[0])
    (tasks / "data.jsonl").write_text(json.dumps({**doc, "video": "one.mp4"}) + "\n")
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision", "--model_args",
         f"pretrained={ckpt},max_frames_num={FRAMES},torch_dtype=float32,conv_template=qwen_1_5,"
         "model_name=llava_qwen,compression=aot@0.25", "--tasks", "aot_smoke_mcq", "--include_path",
         str(tasks.parent), "--device", "cpu", "--batch_size", "1", "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert WARNING in run.stderr
    samples = [json.loads(line) for path in out.rglob("*_samples_aot_smoke_mcq.jsonl")
               for line in path.read_text().splitlines() if line.strip()]
    assert len(samples) == 1
    record = samples[0]["token_counts"][0]
    assert (record["frames"], record["frames_sampled"], record["failed"]) == (1, FRAMES, False)

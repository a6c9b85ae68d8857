"""The offline grounding and captioning tasks (``aot_smoke_grounding``, ``aot_smoke_caption``: lmms-eval's own
Charades-STA and YouCook2 scoring code) through ``aot_qwen2_5_vl`` and ``aot_qwen3_vl`` on the real lmms-eval
command line, against lmms-eval's own ``qwen2_5_vl`` and ``qwen3_vl`` adapters on the same tiny checkpoints,
with the tasks' own long generations (50 and 32 new tokens):

* ``compression=none`` and ``aot@1.0`` answer exactly as lmms-eval's own adapter, with the visual token count
  of the reference processing (qwen-vl-utils' frame sizes) and without transformers' per-frame pixel-cap
  warning, which lmms-eval's own adapter triggers;
* ``aot@0.25`` keeps a quarter of the visual tokens;
* a document whose video is missing fails alone: no retention, an empty answer, the task's worst score.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")
pytest.importorskip("qwen_vl_utils")
pytest.importorskip("torchvision")

from lmms_files import results as _results  # noqa: E402 - tests/lmms_files.py
from lmms_files import samples as _samples  # noqa: E402
from lmms_files import text as _text  # noqa: E402

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl  # noqa: E402
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "lmms_eval_tasks"
GROUNDING, CAPTION = "aot_smoke_grounding", "aot_smoke_caption"
VIDEO_FIELD = {GROUNDING: "video", CAPTION: "video_path"}
MAX_NEW = {GROUNDING: 50, CAPTION: 32}  # the tasks' generation_kwargs
N_DOCS, MISSING = 3, 1
CAP_WARNING = "does not apply the per-frame pixel cap"
#: family -> (lmms-eval's own adapter, the plugin, fixture writer, model_args, patch size): 8 frames of the
#: 96 x 96 px clips, 3 x 3 merged tokens per temporal patch
FAMILIES = {
    "qwen2_5_vl": ("qwen2_5_vl", "aot_qwen2_5_vl", write_tiny_qwen2_5_vl,
                   "device_map=cpu,max_num_frames=8,max_pixels=12544,min_pixels=3136", 14),
    "qwen3_vl": ("qwen3_vl", "aot_qwen3_vl", write_tiny_qwen3_vl,
                 "device_map=cpu,max_num_frames=8,max_pixels=12544,min_pixels=4096", 16),
}
#: run name -> (model: "builtin" or "plugin", compression, task folder: "good" or "missing")
RUNS = {"builtin": ("builtin", None, "good"), "none": ("plugin", "none", "good"),
        "aot@1.0": ("plugin", "aot@1.0", "good"), "aot@0.25": ("plugin", "aot@0.25", "missing")}

pytestmark = pytest.mark.slow


def _docs(task: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS_DIR / task / "data.jsonl").read_text().splitlines() if line.strip()]


def _task_copies(root: Path, *, missing: bool) -> Path:
    """Both tasks' first ``N_DOCS`` documents (with ``missing``, document ``MISSING`` names a missing video)
    and the ``aot_smoke`` clips the captioning task reads."""
    tasks = root / ("tasks_missing" if missing else "tasks_good")
    for folder in ("aot_smoke", GROUNDING, CAPTION):
        shutil.copytree(TASKS_DIR / folder, tasks / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for task in (GROUNDING, CAPTION):
        docs = _docs(task)[:N_DOCS]
        if missing:
            docs[MISSING][VIDEO_FIELD[task]] = "missing.mp4"
        (tasks / task / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return tasks


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """``{"name", "runs": {run: (output folder, stderr)}}``: one lmms-eval evaluation of both tasks per
    :data:`RUNS` entry on one family's tiny checkpoint."""
    builtin, plugin, writer, model_args, patch = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    ckpt = writer(root / "ckpt")
    folders = {"good": _task_copies(root, missing=False), "missing": _task_copies(root, missing=True)}
    runs = {}
    for run, (model, compression, tasks) in RUNS.items():
        args = f"pretrained={ckpt},{model_args}" + ("" if compression is None else f",compression={compression}")
        out = root / run.replace("@", "_")
        proc = subprocess.run(
            [sys.executable, "-m", "lmms_eval", "--model", builtin if model == "builtin" else plugin,
             "--model_args", args, "--tasks", f"{GROUNDING},{CAPTION}", "--include_path", str(folders[tasks]),
             "--batch_size", "1", "--device", "cpu", "--output_path", str(out), "--log_samples"],
            capture_output=True, text=True, timeout=900, cwd=root, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        runs[run] = (out, proc.stderr)
    return {"name": request.param, "patch": patch, "model_args": model_args, "runs": runs}


def _reference_tokens(patch: int, model_args: str) -> int:
    """Visual tokens of an 8-frame 96 x 96 clip as qwen-vl-utils sizes it: (8 / 2 temporal patches) x the
    merged grid of its ``smart_resize`` (factor patch x 2) within the run's pixel bounds."""
    from qwen_vl_utils.vision_process import smart_resize

    bounds = dict(kv.split("=") for kv in model_args.split(","))
    h, w = smart_resize(96, 96, factor=patch * 2, min_pixels=int(bounds["min_pixels"]),
                        max_pixels=int(bounds["max_pixels"]))
    return 4 * (h // (patch * 2)) * (w // (patch * 2))


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_none_and_full_retention_answer_as_lmms_evals_own_adapter(family, task):
    runs = family["runs"]
    want = {d: _text(s) for d, s in _samples(runs["builtin"][0], task).items()}
    assert sorted(want) == list(range(N_DOCS)) and all(want.values())
    tokens = _reference_tokens(family["patch"], family["model_args"])
    for run in ("none", "aot@1.0"):
        samples = _samples(runs[run][0], task)
        assert {d: _text(s) for d, s in samples.items()} == want, run
        for s in samples.values():
            record = s["token_counts"][0]
            assert record["failed"] is False and record["compression"] == run
            assert record["visual_tokens"] == record["visual_tokens_plain"] == tokens and record["retention"] == 1.0
            assert 1 <= record["output_tokens"] <= MAX_NEW[task]
        # long generations: at least one answer runs to the task's limit
        assert max(s["token_counts"][0]["output_tokens"] for s in samples.values()) == MAX_NEW[task], run
    # the answers depend on the visual tokens, so the equality above is a real check
    quarter = _samples(runs["aot@0.25"][0], task)
    assert any(_text(quarter[d]) != want[d] for d in want if d != MISSING)


def test_the_reference_pixel_cap_runs_without_transformers_warning(family):
    runs = family["runs"]
    assert CAP_WARNING in runs["builtin"][1]  # lmms-eval's own adapter leaves the cap unset
    for run in ("none", "aot@1.0", "aot@0.25"):
        assert CAP_WARNING not in runs[run][1], run


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_a_quarter_retention_keeps_a_quarter_of_the_visual_tokens(family, task):
    samples = _samples(family["runs"]["aot@0.25"][0], task)
    records = [s["token_counts"][0] for d, s in samples.items() if d != MISSING]
    assert len(records) == N_DOCS - 1
    for record in records:
        assert record["compression"] == "aot@0.25" and not record["failed"]
        # round(0.25 * 36) = 9; with one clip per temporal patch the release's double keyframe emission
        # makes the count even (docs/methods.md): 8 or 10
        assert abs(record["visual_tokens"] - 9) <= 1
        assert record["retention"] == record["visual_tokens"] / record["visual_tokens_plain"]
    throughput = _results(family["runs"]["aot@0.25"][0])["throughput"]
    assert throughput["avg_retention"] == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("task", [GROUNDING, CAPTION])
def test_a_missing_video_fails_alone_and_scores_the_tasks_worst(family, task):
    folder = family["runs"]["aot@0.25"][0]
    samples = _samples(folder, task)
    assert sorted(samples) == list(range(N_DOCS))
    failed = samples[MISSING]["token_counts"][0]
    assert failed["failed"] is True and failed["retention"] is None
    assert "missing.mp4" in failed["error"] and _text(samples[MISSING]) == ""
    assert all(not s["token_counts"][0]["failed"] and _text(s) for d, s in samples.items() if d != MISSING)
    if task == GROUNDING:  # an empty interval: IoU 0 at every threshold
        from lmms_eval.tasks.charades_sta.utils import temporal_grounding_aggregate_iou3 as iou3
        from lmms_eval.tasks.charades_sta.utils import temporal_grounding_aggregate_miou as miou

        entry = samples[MISSING]["charades_sta_mIOU"]
        assert list(entry.values()) == [""]
        assert all(samples[MISSING][m] == entry for m in ("charades_sta_IOU@3", "charades_sta_IOU@5",
                                                          "charades_sta_IOU@7"))
        assert miou([entry], None) == iou3([entry], None) == 0.0
    else:  # an empty caption, scored by pycocoevalcap with the others
        assert samples[MISSING]["CIDEr"]["pred"] == ""
    results = _results(folder)["results"][task]
    assert all(isinstance(v, float) for k, v in results.items() if k.endswith(",none") and "stderr" not in k)

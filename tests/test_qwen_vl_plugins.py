"""``aot_qwen2_5_vl`` and ``aot_qwen3_vl`` through the real lmms-eval command line, against lmms-eval's own
``qwen2_5_vl`` and ``qwen3_vl`` (their chat adapters, what the names resolve to) on the same tiny
checkpoint in the Hugging Face layout: the same answers without compression and with a compression that
keeps every token, at batch size 1 and 2; retention and the efficiency figures reported with
``aot@0.25``; bad videos fail alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")
pytest.importorskip("qwen_vl_utils")
pytest.importorskip("torchvision")

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl  # noqa: E402
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TASK = ROOT / "lmms_eval_tasks" / "aot_smoke"
#: family -> (lmms-eval built-in, plugin, fixture writer, the built-in's own keys, small enough for CPU:
#: 8 frames (4 temporal tokens) of the 96 x 96 px smoke videos at 84 x 84 (patch 14) or 96 x 96 (patch
#: 16) px, 3 x 3 merged tokens each)
FAMILIES = {
    "qwen2_5_vl": ("qwen2_5_vl", "aot_qwen2_5_vl", write_tiny_qwen2_5_vl,
                   "device_map=cpu,max_num_frames=8,max_pixels=12544,min_pixels=3136"),
    "qwen3_vl": ("qwen3_vl", "aot_qwen3_vl", write_tiny_qwen3_vl,
                 "device_map=cpu,max_num_frames=8,max_pixels=12544,min_pixels=4096"),
}

pytestmark = pytest.mark.slow


def _lmms_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(built-in name, plugin name, tiny checkpoint, model_args) of one family."""
    builtin, plugin, writer, args = FAMILIES[request.param]
    return builtin, plugin, writer(tmp_path_factory.mktemp(request.param) / "ckpt"), args


def _run(fam: tuple, out: Path, model: str, extra: str = "", *, batch: int = 1, tasks: str = "aot_smoke_mcq",
         include: Path = ROOT / "lmms_eval_tasks", limit: int | None = 4) -> tuple[dict, dict[str, dict[int, dict]]]:
    _, _, ckpt, model_args = fam
    args = ["--model", model, "--model_args", f"pretrained={ckpt},{model_args}{extra}", "--tasks", tasks,
            "--include_path", str(include), "--batch_size", str(batch), "--device", "cpu",
            "--output_path", str(out), "--log_samples"]
    if limit is not None:
        args += ["--limit", str(limit)]
    _lmms_eval(*args, cwd=out.parent)
    results = json.loads(_only(out, "*_results.json").read_text())
    samples = {}
    for task in tasks.split(","):
        lines = _only(out, f"*_samples_{task}.jsonl").read_text().splitlines()
        samples[task] = {s["doc_id"]: s for s in map(json.loads, lines)}
    return results, samples


def _answers(samples: dict[int, dict]) -> dict[int, str]:
    return {doc: s["filtered_resps"] for doc, s in samples.items()}


@pytest.mark.parametrize("batch", [1, 2])
def test_plugin_answers_as_the_builtin_without_compression_and_keeping_every_token(family, tmp_path, batch):
    builtin_name, plugin = family[:2]
    _, builtin = _run(family, tmp_path / "builtin", builtin_name, batch=batch)
    want = _answers(builtin["aot_smoke_mcq"])
    assert len(want) == 4 and all(isinstance(a, str) and a for a in want.values())
    specs = ["none", "aot@1.0"] if batch == 1 else ["aot@1.0"]
    for spec in specs:
        results, ours = _run(family, tmp_path / f"ours-{spec}", plugin, f",compression={spec}", batch=batch)
        assert results["config"]["model"] == plugin
        assert _answers(ours["aot_smoke_mcq"]) == want, spec
        for s in ours["aot_smoke_mcq"].values():
            counts = s["token_counts"][0]
            assert counts["failed"] is False and counts["compression"] == spec
            # 4 temporal tokens of 3 x 3 merged tokens: every one of the 36 is sent
            assert counts["visual_tokens"] == counts["visual_tokens_plain"] == 36 and counts["retention"] == 1.0
            assert counts["frames"] == 8
        assert results["throughput"]["avg_retention"] == 1.0


def test_aot_quarter_reports_retention_and_bad_videos_fail_alone(family, tmp_path):
    """``compression=aot@0.25`` on the smoke task and, in the same run, a task with a missing and a corrupt
    video: retention and the efficiency figures per sample and per run; the two bad samples answered
    wrong and counted as failed, the others answered."""
    tasks = tmp_path / "tasks"
    shutil.copytree(SMOKE_TASK, tasks / "smoke", ignore=shutil.ignore_patterns("__pycache__"))
    bad_dir = tasks / "bad"
    shutil.copytree(SMOKE_TASK, bad_dir, ignore=shutil.ignore_patterns("*.mp4", "README.md", "__pycache__"))
    shutil.copy(SMOKE_TASK / "red_right.mp4", bad_dir / "red_right.mp4")
    (bad_dir / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 200)
    yaml = (bad_dir / "aot_smoke_mcq.yaml").read_text().replace("task: aot_smoke_mcq", "task: aot_test_qwen_bad_videos")
    (bad_dir / "aot_smoke_mcq.yaml").write_text(yaml)
    docs = [json.loads(line) for line in (SMOKE_TASK / "data.jsonl").read_text().splitlines() if line.strip()]
    good = [d for d in docs if d["video"] == "red_right.mp4"][:2]
    bad = [dict(good[0], id="missing", video="missing.mp4"), dict(good[0], id="corrupt", video="corrupt.mp4")]
    (bad_dir / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in [good[0], *bad, good[1]]))

    results, samples = _run(family, tmp_path / "out", family[1], ",compression=aot@0.25", batch=2,
                            tasks="aot_smoke_mcq,aot_test_qwen_bad_videos", include=tasks, limit=None)
    smoke = samples["aot_smoke_mcq"]
    assert len(smoke) == 8
    for s in smoke.values():
        counts = s["token_counts"][0]
        assert counts["failed"] is False and counts["compression"] == "aot@0.25"
        assert counts["visual_tokens_plain"] == 36
        # the exact budget is round(0.25 * 36) = 9; with one clip per temporal token the release's double
        # keyframe emission makes the count even (docs/methods.md): 8 or 10
        assert abs(counts["visual_tokens"] - 9) <= 1 and counts["retention"] == counts["visual_tokens"] / 36
        assert counts["stage_tokens"]["input"] == 36 and counts["vision_ms"] > 0 and counts["ttft_ms"] > 0
        assert counts["prefill_tflops"] > 0
    by_doc = samples["aot_test_qwen_bad_videos"]
    for doc_id in (1, 2):
        counts = by_doc[doc_id]["token_counts"][0]
        assert counts["failed"] is True and by_doc[doc_id]["acc"] == 0.0
        assert by_doc[doc_id]["filtered_resps"] != by_doc[doc_id]["target"]
    assert "missing.mp4" in by_doc[1]["token_counts"][0]["error"]
    assert "corrupt.mp4" in by_doc[2]["token_counts"][0]["error"]
    for doc_id in (0, 3):
        assert by_doc[doc_id]["token_counts"][0]["failed"] is False
    throughput = results["throughput"]
    assert (throughput["avg_samples"], throughput["avg_failed_samples"]) == (12, 2)
    assert 0.2 < throughput["avg_retention"] < 0.3


# ---------------------------------------------------------------------------------------- model_args
# (each accepted key's effect: tests/test_adapters.py)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_checkpoint_of_another_family_is_refused_naming_its_type(tmp_path, name):
    from lmms_eval.models import get_model

    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    plugin = FAMILIES[name][1]
    llava = write_tiny_checkpoint(tmp_path / "llava")
    with pytest.raises(ValueError, match=rf"is a 'llava' checkpoint; {plugin} expected model_type '{name}'"):
        get_model(plugin).create_from_arg_string(f"pretrained={llava},device_map=cpu", {"device": "cpu"})


@pytest.mark.parametrize("name,module,cls", [
    ("qwen2_5_vl", "qwen2_5_vl", "Qwen2_5_VL"), ("qwen3_vl", "qwen3_vl", "Qwen3_VL"),
])
def test_plugin_keeps_the_builtin_keys_and_adds_its_own(name, module, cls):
    """Every key of the built-in's ``__init__`` is accepted or refused with its reason."""
    import importlib
    import inspect

    from lmms_eval.models import get_model

    builtin_cls = getattr(importlib.import_module(f"lmms_eval.models.simple.{module}"), cls)
    builtin = {n for n, p in inspect.signature(builtin_cls.__init__).parameters.items()
               if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    ours_cls = get_model(FAMILIES[name][1])
    ours = set(ours_cls.accepted_model_args())
    assert builtin - ours == set(ours_cls.RETIRED_MODEL_ARGS)
    assert ours - builtin == {"compression", "max_batch_size", "torch_dtype", "shallow_score_layer", "deep_score_layer"}

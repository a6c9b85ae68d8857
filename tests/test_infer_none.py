"""``aot infer --compression`` on a checkpoint whose config.json carries ``aot_compression`` (as training
saves it): ``none`` runs full tokens, an explicit spec replaces the saved one, no flag runs the saved one
and says so; the lmms-eval plugin at ``compression=none`` keeps the same tokens as ``aot infer``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import visionzip
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.video import write_synthetic_video

FRAMES = 8


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_none")
    ckpt = write_tiny_checkpoint(root / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    saved = visionzip.load_config("aot@0.25")
    config["aot_compression"] = {"method": saved.method, **saved.to_dict()}  # what a fine-tuned checkpoint holds
    (ckpt / "config.json").write_text(json.dumps(config, indent=2))
    video = write_synthetic_video(root / "clip.mp4", frames=2 * FRAMES, seed=0)
    return {"ckpt": ckpt, "video": video, "root": root}


def _infer(assets, name: str, *flag: str) -> tuple[dict, str]:
    out = assets["root"] / f"{name}.json"
    run = subprocess.run(
        [sys.executable, "-m", "llava.cli", "infer", "--model", str(assets["ckpt"]), "--video", str(assets["video"]),
         "--question", "What moves?", "--max-frames", str(FRAMES), "--dtype", "float32", "--max-new-tokens", "2",
         "--device", "cpu", "--json", str(out), *flag],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text()), run.stdout


def test_none_runs_full_tokens_on_a_checkpoint_saved_with_a_compression(assets):
    stats, stdout = _infer(assets, "none", "--compression", "none")
    assert stats["compression"] == "none" and "compression: none (from --compression)" in stdout
    assert stats["retention"] == 1.0 and stats["visual_tokens"] == stats["visual_tokens_plain"]


def test_an_explicit_spec_replaces_the_saved_one_and_no_flag_runs_the_saved_one(assets):
    saved, stdout = _infer(assets, "saved")
    assert "from aot_compression of" in stdout and saved["compression"] == "aot (checkpoint config)"
    assert 0 < saved["visual_tokens"] < saved["visual_tokens_plain"]
    assert saved["retention"] == pytest.approx(0.25, abs=0.05)
    other, _ = _infer(assets, "other", "--compression", "aot@0.5")
    assert other["compression"] == "aot@0.5" and other["retention"] == pytest.approx(0.5, abs=0.05)
    assert saved["visual_tokens"] < other["visual_tokens"] < other["visual_tokens_plain"]


def test_an_empty_compression_is_refused_before_the_model_loads(assets):
    run = subprocess.run([sys.executable, "-m", "llava.cli", "infer", "--model", str(assets["ckpt"]), "--video",
                          str(assets["video"]), "--question", "Q", "--compression", ""],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--compression ''" in run.stderr, run.stderr


def test_the_plugin_at_none_agrees_with_aot_infer(assets):
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from llava.eval.adapters.llava_onevision import AOTLlavaOneVision

    cli, _ = _infer(assets, "none_again", "--compression", "none")
    model = AOTLlavaOneVision(pretrained=str(assets["ckpt"]), device="cpu", compression="none",
                              max_frames_num=FRAMES, torch_dtype="float32", model_name="llava_qwen")
    model.task_dict = {"t": {"test": {0: {"video": str(assets["video"])}}}}
    gen = {"max_new_tokens": 2, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    request = Instance(request_type="generate_until",
                       arguments=("What moves?", gen, lambda doc: [doc["video"]], 0, "t", "test"),
                       idx=0, metadata={"task": "t", "doc_id": 0, "repeats": 1})
    model.generate_until([request])
    record = model.records[-1]
    assert record["compression"] == "none" and record["retention"] == 1.0
    assert record["visual_tokens"] == cli["visual_tokens"] == cli["visual_tokens_plain"]

"""``aot infer`` and ``aot sweep`` on Qwen2.5-VL and Qwen3-VL checkpoints in the Hugging Face layout (tiny,
random weights), as a user runs them: the answer, the stats and the sweep's table through transformers'
own model; ``aot infer`` without compression answers as transformers' own ``generate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl  # noqa: E402
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "lmms_eval_tasks" / "aot_smoke" / "red_right.mp4"
WRITERS = {"qwen2_5_vl": write_tiny_qwen2_5_vl, "qwen3_vl": write_tiny_qwen3_vl}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def ckpt(request, tmp_path_factory):
    return request.param, WRITERS[request.param](tmp_path_factory.mktemp(request.param) / "ckpt")


def _infer(ckpt: Path, out: Path, compression: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "llava.cli", "infer", "--model", str(ckpt), "--video", str(VIDEO), "--question",
         "What moves?", "--compression", compression, "--max-frames", "16", "--dtype", "float32", "--device", "cpu",
         "--max-new-tokens", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "answer:" in run.stdout and "retention (paper definition)" in run.stdout
    return json.loads(out.read_text())


def test_aot_infer_on_a_qwen_checkpoint(ckpt, tmp_path):
    family, ckpt = ckpt
    stats = _infer(ckpt, tmp_path / "aot.json", "aot@0.25")
    # 16 frames of 96 x 96 px (84 x 84 for patch 14): 8 temporal tokens of 3 x 3
    assert stats["frames"] == 16 and stats["visual_tokens_plain"] == 72
    assert stats["visual_tokens"] == 18 and stats["retention"] == 0.25 and stats["output_tokens"] == 4

    plain = _infer(ckpt, tmp_path / "none.json", "none")
    assert plain["visual_tokens"] == plain["visual_tokens_plain"] == 72 and plain["retention"] == 1.0
    # without compression the answer is transformers' own greedy generate on the same frames
    import transformers

    from llava.video import load_video

    cls = (transformers.Qwen3VLForConditionalGeneration if family == "qwen3_vl"
           else transformers.Qwen2_5_VLForConditionalGeneration)
    model = cls.from_pretrained(ckpt, torch_dtype="float32").eval()
    processor = transformers.AutoProcessor.from_pretrained(ckpt)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    clip = load_video(VIDEO, max_frames=16)
    metadata = {"fps": clip.fps, "total_num_frames": clip.total_frames, "frames_indices": clip.indices}
    extra = {"video_metadata": [metadata], "do_sample_frames": False} if family == "qwen3_vl" else {}
    inputs = processor(text=[text], videos=[clip.frames], return_tensors="pt", **extra)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
    want = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
    assert plain["answer"] == want


@pytest.mark.slow
@pytest.mark.parametrize("model,folder", [("aot_qwen2_5_vl", "tiny-qwen2.5-vl"), ("aot_qwen3_vl", "tiny-qwen3-vl")])
def test_aot_sweep_on_the_tiny_qwen_checkpoint(tmp_path, model, folder):
    pytest.importorskip("lmms_eval")
    pytest.importorskip("qwen_vl_utils")
    from llava.eval import sweep

    out = tmp_path / "sweep"
    code = sweep.main(["--model", model, "--methods", "aot,visionzip", "--retentions", "0.1,0.25",
                       "--limit", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["model"] == model and (out / folder / "config.json").is_file()
    runs = {(r["method"], r["target_retention"]): r for r in data["runs"]}
    assert runs[("full", None)]["retention"] == 1.0 and runs[("full", None)]["visual_tokens_plain"] == 288
    for method in ("aot", "visionzip"):
        for r in (0.1, 0.25):
            run = runs[(method, r)]
            assert not run["failed"] and run["samples"] == 2 and abs(run["retention"] - r) <= 0.01
    assert "aot" in (out / "sweep.md").read_text()

"""The tiny Qwen2.5-VL checkpoint loads with transformers' own class and processor and generates from
a decoded mp4: the ground the Qwen2.5-VL seam is tested on."""

from __future__ import annotations

import json

import pytest
import torch

from llava.fixtures.tiny_qwen2_5_vl import QWEN_VL_SPECIAL_TOKENS, write_tiny_qwen2_5_vl
from llava.video import load_video, write_synthetic_video

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")  # transformers' Qwen video processor needs it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen25vl")
    path = write_tiny_qwen2_5_vl(root / "ckpt")
    video = write_synthetic_video(root / "v.mp4", frames=24, seed=1)
    return path, load_video(video, max_frames=8).frames


def test_hugging_face_layout(tiny):
    path, _ = tiny
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert {"text_config", "vision_config"} <= set(config)
    assert config["vision_config"]["temporal_patch_size"] == 2 and config["vision_config"]["spatial_merge_size"] == 2
    tok = transformers.AutoTokenizer.from_pretrained(path)
    for name in ("video_token_id", "image_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert tok.convert_ids_to_tokens(config[name]) in QWEN_VL_SPECIAL_TOKENS
    assert (path / "model.safetensors").is_file() and (path / "chat_template.jinja").is_file()


def test_loads_and_generates_from_a_decoded_video(tiny):
    path, frames = tiny
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in text
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t == len(frames) // 2  # two frames per temporal token
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == t * h * w // 4  # the 2x2 merger
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)

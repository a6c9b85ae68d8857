"""Every compression method at the model's one seam: ``set_compression("<method>@<retention>")`` on a
tiny LLaVA-OneVision model, the same frames and the same accounting for all."""

from __future__ import annotations

import pytest
import torch

import visionzip as vz
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.model.builder import load_pretrained_model
from llava.video import load_video, write_synthetic_video


@pytest.fixture(scope="module")
def model_and_pixels(tmp_path_factory):
    root = tmp_path_factory.mktemp("seam")
    ckpt = write_tiny_checkpoint(root / "ckpt")
    video = write_synthetic_video(root / "v.mp4", frames=48, seed=3)
    tok, model, processor, _ = load_pretrained_model(str(ckpt), None, "llava_qwen", device_map=None,
                                                     torch_dtype="float32", attn_implementation="sdpa")
    pixels = processor.preprocess(load_video(video, max_frames=16).frames, return_tensors="pt")["pixel_values"]
    return model, pixels


@pytest.mark.parametrize("method", vz.list_methods())
def test_each_method_through_the_model(model_and_pixels, method):
    model, pixels = model_and_pixels
    spec = method if method == "full" else f"{method}@0.15"
    cfg = model.set_compression(spec)
    assert cfg.method == method
    calls = []
    tower = model.get_vision_tower()
    real = tower.forward_with_scores

    def spy(*args, **kwargs):
        calls.append(kwargs.get("score_layers"))
        return real(*args, **kwargs)

    tower.forward_with_scores = spy
    try:
        with torch.no_grad():
            tokens, stats = model.encode_multimodal([pixels], ["video"])
    finally:
        del tower.forward_with_scores
    assert bool(calls) == bool(vz.method_of(cfg).score_roles)  # scores captured only for methods reading them
    assert calls == ([vz.get_method(method).score_layers(cfg)] if calls else [])  # and only their layers
    target = 1.0 if method == "full" else 0.15
    assert abs(stats[0].retention - target) <= 0.01
    assert tokens[0].shape[0] == stats[0].visual_tokens == stats[0].result.tokens.shape[0]
    assert stats[0].visual_tokens_plain == 16 * 196 + 1
    # the setting is recorded with the model and resolves back to the same config
    assert model.config.aot_compression["method"] == method
    from llava.model.llava_arch import resolve_compression

    assert resolve_compression(model.config.aot_compression) == cfg
    model.set_compression(None)

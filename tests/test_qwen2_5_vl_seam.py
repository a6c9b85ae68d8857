"""The compression seam on transformers' own Qwen2.5-VL (tiny random checkpoint in the Hugging Face
layout, a real decoded video): positions and logits against transformers' model itself."""

from __future__ import annotations

import pytest
import torch

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl
from llava.model.qwen2_5_vl import Qwen25VLCompression
from llava.video import load_video, write_synthetic_video

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")

PROMPT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves in the video?"}]}]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-seam")
    path = write_tiny_qwen2_5_vl(root / "ckpt", max_pixels=168 * 224)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    frames = load_video(write_synthetic_video(root / "v.mp4", frames=32, seed=4, size=(168, 224)), max_frames=8).frames
    text = processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    return model, processor, inputs, frames


def _logits(model, prepared):
    with torch.no_grad():
        return model(inputs_embeds=prepared["inputs_embeds"], attention_mask=prepared["attention_mask"],
                     position_ids=prepared["position_ids"]).logits


def test_layout_is_the_merged_grid_of_temporal_tokens(qwen):
    model, _, inputs, frames = qwen
    seam = Qwen25VLCompression(model)
    (layout,) = seam.video_layouts(inputs["video_grid_thw"])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert layout.frames == t == len(frames) // 2 and layout.temporal_patch == 2
    assert layout.grid == layout.pooled_grid == (h // 2, w // 2) and layout.num_newlines == 0
    assert layout.num_tokens == int((inputs["input_ids"] == model.config.video_token_id).sum())


@pytest.mark.parametrize("spec", [None, "full", "aot@1.0"])
def test_keeping_every_token_gives_transformers_logits(qwen, spec):
    model, _, inputs, _ = qwen
    with torch.no_grad():
        want = model(**inputs).logits
    seam = Qwen25VLCompression(model)
    seam.set_compression(spec)
    prepared = seam.prepare(**inputs)
    assert prepared["inputs_embeds"].shape[1] == inputs["input_ids"].shape[1]
    assert torch.equal(_logits(model, prepared), want)


@pytest.mark.parametrize("spec", ["random@0.5", "visionzip@0.25"])
def test_dropping_tokens_is_transformers_on_the_kept_tokens_at_their_positions(qwen, spec):
    model, _, inputs, _ = qwen
    seam = Qwen25VLCompression(model)
    seam.set_compression(spec)
    prepared = seam.prepare(**inputs)
    (result,) = seam.last_results
    kept_cells = result.kept_grid.reshape(-1)  # visionzip's merged tokens sit at their centre's cell
    # the oracle: transformers' own embeddings and positions of the whole prompt, restricted to the
    # text and the kept video cells (raster order)
    ids = inputs["input_ids"][0]
    video = ids == model.config.video_token_id
    with torch.no_grad():
        embeds = model.model.get_input_embeddings()(inputs["input_ids"])
        feats = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output[0]
        embeds[0, video] = feats.to(embeds.dtype)
        positions, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                  video_grid_thw=inputs["video_grid_thw"],
                                                  second_per_grid_ts=inputs.get("second_per_grid_ts"),
                                                  attention_mask=inputs["attention_mask"])
    keep = ~video
    keep[torch.nonzero(video)[:, 0][kept_cells]] = True
    assert torch.equal(prepared["position_ids"][:, 0], positions[:, 0, keep])
    if spec.startswith("random"):  # only drops: the very tokens of the uncompressed prompt
        assert torch.equal(prepared["inputs_embeds"][0], embeds[0, keep])
        with torch.no_grad():
            want = model(inputs_embeds=embeds[:, keep], position_ids=positions[:, :, keep]).logits
        assert torch.equal(_logits(model, prepared), want)
    assert prepared["rope_deltas"][0, 0] == positions[:, 0].max() + 1 - int(keep.sum())
    assert abs(result.retention - float(spec.split("@")[1])) <= 0.01


def test_batch_of_two_equals_each_alone(qwen):
    model, processor, inputs, frames = qwen
    text = processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    short = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]}],
                                          add_generation_prompt=True)
    batch = processor(text=[text, short], videos=[frames, frames[:4]], return_tensors="pt", padding=True)
    seam = Qwen25VLCompression(model)
    seam.set_compression("aot@0.3")
    together = _logits(model, seam.prepare(**batch))[:, -1]
    for row, (t, v) in enumerate([(text, frames), (short, frames[:4])]):
        alone = _logits(model, seam.prepare(**processor(text=[t], videos=[v], return_tensors="pt")))[:, -1]
        torch.testing.assert_close(together[row], alone[0], rtol=1e-4, atol=1e-5)


def test_another_family_is_refused(tmp_path):
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
    from llava.model.builder import load_pretrained_model

    _, llava_model, _, _ = load_pretrained_model(str(write_tiny_checkpoint(tmp_path / "ov")), None, "llava_qwen",
                                                 device_map=None, torch_dtype="float32")
    with pytest.raises(ValueError, match="model_type='llava_qwen' is not valid here; expected 'qwen2_5_vl'"):
        Qwen25VLCompression(llava_model)


def _greedy_without_cache(model, embeds, positions, steps):
    """Greedy decoding by full forwards (no KV cache): each new token at the last position + 1."""
    out = []
    embed = model.model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(steps):
            logits = model(inputs_embeds=embeds, position_ids=positions, use_cache=False).logits[:, -1]
            token = logits.argmax(-1)
            out.append(int(token))
            embeds = torch.cat([embeds, embed(token)[:, None]], 1)
            positions = torch.cat([positions, positions[..., -1:] + 1], -1)
    return out


@pytest.mark.parametrize("spec", [None, "aot@0.25", "random@0.5"])
def test_generation_with_the_kv_cache(qwen, spec):
    model, _, inputs, _ = qwen
    seam = Qwen25VLCompression(model)
    seam.set_compression(spec)
    steps = 4
    new = seam.generate(**dict(inputs), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    prepared = seam.prepare(**inputs)
    assert new[0].tolist() == _greedy_without_cache(model, prepared["inputs_embeds"], prepared["position_ids"], steps)
    if spec is None:  # and without compression it is transformers' own generate
        with torch.no_grad():
            full = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        assert new[0].tolist() == full[0, inputs["input_ids"].shape[1]:].tolist()

"""The compression seam on transformers' own Qwen2.5-VL (tiny random checkpoint in the Hugging Face
layout, a real decoded video): positions and logits against transformers' model itself."""

from __future__ import annotations

import pytest
import torch

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl
from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression
from llava.model.seam import uncompressed_record
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
    if spec is None:  # the record the plugins write for the model's own generate is the seam's
        (layout,) = seam.video_layouts(inputs["video_grid_thw"])
        (record,) = seam.last_visual_stats
        untimed = {**record.to_dict(), "vision_ms": 0.0}
        assert untimed == uncompressed_record(layout).to_dict() and seam.last_results == []


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
    question = {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]}
    short = processor.apply_chat_template([question], add_generation_prompt=True)
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


@pytest.mark.parametrize("method", sorted(set(__import__("visionzip").list_methods()) - {"full"}))
def test_every_registered_method_through_the_model(qwen, method):
    """Each method at 25 % through the seam: the prompt shrinks to what the method returned, every token
    carries the position of a cell of the uncompressed prompt, the stats report it, and the model runs."""
    model, _, inputs, frames = qwen
    seam = Qwen25VLCompression(model)
    seam.set_compression(f"{method}@0.25")
    prepared = seam.prepare(**inputs, questions=["What moves in the video?"])
    (result,) = seam.last_results
    (stats,) = seam.last_visual_stats
    plain = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert stats.visual_tokens_plain == plain and stats.visual_tokens == result.tokens.shape[0] < plain
    assert stats.frames == len(frames) and stats.retention == result.retention
    assert abs(result.retention - 0.25) <= 1.5 / plain * 4  # within a token or so per temporal token
    assert prepared["inputs_embeds"].shape[1] == inputs["input_ids"].shape[1] - plain + stats.visual_tokens
    with torch.no_grad():
        positions, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                  video_grid_thw=inputs["video_grid_thw"],
                                                  second_per_grid_ts=inputs.get("second_per_grid_ts"),
                                                  attention_mask=inputs["attention_mask"])
    cells = {tuple(p) for p in positions[:, 0].T.tolist()}
    assert {tuple(p) for p in prepared["position_ids"][:, 0].T.tolist()} <= cells
    assert torch.isfinite(_logits(model, prepared)).all()


# ---------------------------------------------------------------------------------------- bad input


def test_one_temporal_token_is_refused_naming_it(qwen):
    model, processor, _, frames = qwen
    text = processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames[:2]], return_tensors="pt")  # 2 frames: one temporal token
    assert inputs["video_grid_thw"][0, 0] == 1
    seam = Qwen25VLCompression(model)
    seam.set_compression("aot@0.25")
    with pytest.raises(ValueError,
                       match=r"video 0 has 1 temporal token .*expected at least 2 temporal tokens "
                             r"\(4 sampled frames\)"):
        seam.prepare(**inputs)
    seam.set_compression(None)  # without compression the model's own path takes it
    assert seam.prepare(**inputs)["inputs_embeds"].shape[1] == inputs["input_ids"].shape[1]


def test_a_retention_below_one_token_per_temporal_token_is_refused(qwen):
    model, _, inputs, _ = qwen
    seam = Qwen25VLCompression(model)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    per = (h // 2) * (w // 2)
    seam.set_compression(f"aot@{0.5 / per:.4f}")
    with pytest.raises(ValueError,
                       match=r"expected a retention of at least one token per temporal token \(2 sampled frames\)"):
        seam.prepare(**inputs)


def test_an_anchor_window_larger_than_the_grid_is_refused(qwen):
    import visionzip

    model, _, inputs, _ = qwen
    _, h, w = inputs["video_grid_thw"][0].tolist()
    seam = Qwen25VLCompression(model)
    seam.set_compression(visionzip.make_config("aot", retention=0.25, window=9))
    with pytest.raises(ValueError, match=rf"window=9 does not fit the {h // 2}x{w // 2} grid of the video"):
        seam.prepare(**inputs)


def test_images_are_refused_by_the_video_seam(qwen):
    model, _, inputs, _ = qwen
    seam = Qwen25VLCompression(model)
    with pytest.raises(ValueError, match="pixel_values \\(images\\) were given"):
        seam.prepare(**inputs, pixel_values=torch.zeros(1, 3))

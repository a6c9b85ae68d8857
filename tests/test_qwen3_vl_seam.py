"""The compression seam on transformers' own Qwen3-VL (tiny random checkpoint in the Hugging Face layout,
deepstack levels present, a real decoded video): logits, deepstack features, timestamps and positions
against transformers' model itself."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import ClassVar

import pytest
import torch

import visionzip as vz
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl
from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression
from llava.video import load_video, write_synthetic_video

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")

PROMPT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves in the video?"}]}]


def _inputs(processor, frames, text=None, fps=8.0):
    text = text or processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    meta = {"fps": fps, "total_num_frames": 4 * len(frames), "frames_indices": list(range(0, 4 * len(frames), 4))}
    return processor(text=[text], videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3-seam")
    path = write_tiny_qwen3_vl(root / "ckpt")
    model = transformers.Qwen3VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    frames = load_video(write_synthetic_video(root / "v.mp4", frames=32, seed=4, size=(128, 160)), max_frames=8).frames
    return model, processor, _inputs(processor, frames), frames


def _logits(model, prepared):
    with torch.no_grad():
        return model(input_ids=prepared["input_ids"], attention_mask=prepared["attention_mask"],
                     position_ids=prepared["position_ids"], mm_encoder_outputs=prepared["mm_encoder_outputs"]).logits


def _transformers_parts(model, inputs):
    """transformers' own embeddings with the video features written in, deepstack levels, positions."""
    with torch.no_grad():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        ids = inputs["input_ids"]
        video = ids[0] == model.config.video_token_id
        embeds = model.model.get_input_embeddings()(ids)
        embeds[0, video] = out.pooler_output[0].to(embeds.dtype)
        levels = [lvl[0] for lvl in out.deepstack_features]
        positions, _ = model.model.get_rope_index(ids, inputs["mm_token_type_ids"],
                                                  video_grid_thw=inputs["video_grid_thw"],
                                                  attention_mask=inputs["attention_mask"])
    return embeds, video, levels, positions


def test_layout_is_the_merged_grid_of_temporal_tokens(qwen3):
    model, _, inputs, frames = qwen3
    (layout,) = Qwen3VLCompression(model).video_layouts(inputs["video_grid_thw"])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert layout.frames == t == len(frames) // 2 and layout.grid == (h // 2, w // 2) and layout.num_newlines == 0
    assert layout.num_tokens == int((inputs["input_ids"] == model.config.video_token_id).sum())


@pytest.mark.parametrize("spec", [None, "full", "aot@1.0"])
def test_keeping_every_token_gives_transformers_logits(qwen3, spec):
    model, _, inputs, _ = qwen3
    with torch.no_grad():
        want = model(**inputs).logits
    seam = Qwen3VLCompression(model)
    seam.set_compression(spec)
    prepared = seam.prepare(**inputs)
    assert torch.equal(prepared["input_ids"], inputs["input_ids"])  # the same prompt, timestamps and all
    assert torch.equal(_logits(model, prepared), want)


# a drop-only method written here: keep every cell of the even temporal tokens, drop the odd ones whole
@dataclasses.dataclass(frozen=True, kw_only=True)
class _EvenFramesConfig(vz.MethodConfig):
    _METHOD: ClassVar[str] = "even_frames_only"


def _even_frames(pooled, video, cfg, budget):
    f_, n, _ = pooled.shape
    kept = (torch.arange(f_) % 2 == 0)[:, None].expand(f_, n).contiguous()
    return vz.Selection(kept, torch.zeros_like(kept))


@contextlib.contextmanager
def _even_frames_registered():
    vz.register_method(vz.MethodSpec("even_frames_only", _EvenFramesConfig, vz.compress_on_grid(_even_frames)))
    try:
        yield
    finally:
        vz.unregister_method("even_frames_only")


def _timestamp_tokens(processor, seconds: float) -> int:
    return len(processor.tokenizer.encode(f"<{seconds:.1f} seconds>", add_special_tokens=False))


@pytest.mark.parametrize("spec", ["random@0.5", "even_frames_only"])
def test_dropping_tokens_is_transformers_on_the_kept_tokens_with_their_positions_and_deepstack(qwen3, spec):
    model, processor, inputs, _ = qwen3
    with _even_frames_registered():
        seam = Qwen3VLCompression(model)
        seam.set_compression(spec if "@" in spec else _EvenFramesConfig())
        prepared = seam.prepare(**inputs)
    (result,) = seam.last_results
    kept_cells = result.kept_mask.reshape(-1)  # raster order: time, row, column
    embeds, video, levels, positions = _transformers_parts(model, inputs)
    # the oracle's prompt: every text token, except the timestamp block of a temporal patch with no
    # token left (its "<t seconds>", <|vision_start|>, <|vision_end|>), and the kept video tokens
    ids = inputs["input_ids"][0]
    text = processor.tokenizer.decode(ids)
    stamps = [float(x) for x in re.findall(r"<(\d+\.\d) seconds>", text)]
    keep = ~video
    pads = torch.nonzero(video)[:, 0]
    per_frame = result.kept_mask.shape[1]
    for f, seconds in enumerate(stamps):
        first, last = int(pads[f * per_frame]), int(pads[(f + 1) * per_frame - 1])
        if not bool(result.kept_mask[f].any()):
            keep[first - 1 - _timestamp_tokens(processor, seconds): last + 2] = False
    keep[pads[kept_cells]] = True
    assert torch.equal(prepared["input_ids"][0], ids[keep])
    assert torch.equal(prepared["position_ids"][:, 0], positions[:, 0, keep])
    with torch.no_grad():
        hidden = model.model.language_model(
            inputs_embeds=embeds[:, keep], position_ids=positions[:, :, keep], visual_pos_masks=video[keep][None],
            deepstack_visual_embeds=[lvl[kept_cells] for lvl in levels],
        ).last_hidden_state
        want = model.lm_head(hidden)
    torch.testing.assert_close(_logits(model, prepared), want, rtol=0, atol=1e-5)
    kept_stamps = re.findall(r"<(\d+\.\d) seconds>", processor.tokenizer.decode(prepared["input_ids"][0]))
    frames_left = [f for f in range(len(stamps)) if bool(result.kept_mask[f].any())]
    assert kept_stamps == [f"{stamps[f]:.1f}" for f in frames_left]  # the timestamps of the patches that remain
    if spec == "even_frames_only":
        assert frames_left == [0, 2] and prepared["kept_blocks"] == [[True, False, True, False]]


def test_merged_tokens_carry_the_plan_into_every_deepstack_level(qwen3):
    model, _, inputs, _ = qwen3
    seam = Qwen3VLCompression(model)
    seam.set_compression("aot@0.25")
    prepared = seam.prepare(**inputs)
    (result,) = seam.last_results
    _, _, levels, positions = _transformers_parts(model, inputs)
    layout = result.plan.layout
    encoder = prepared["mm_encoder_outputs"]["video"]
    (tokens,) = encoder.pooler_output
    order = torch.argsort(result.plan.positions[:, 0], stable=True)  # each patch's tokens in its own block
    assert torch.equal(tokens, result.tokens[order])
    assert len(encoder.deepstack_features) == len(levels) == 2
    for level, (mine,) in zip(levels, encoder.deepstack_features):
        # the very plan of the main features, on transformers' own deepstack level
        assert torch.equal(mine, result.plan.apply(level.view(layout.frames, layout.tokens_per_frame, -1))[order])
    # as many placeholders as tokens; each at its anchor's cell position
    assert int((prepared["input_ids"] == model.config.video_token_id).sum()) == tokens.shape[0]
    video_pos = positions[:, 0, inputs["input_ids"][0] == model.config.video_token_id].T
    cells = video_pos.reshape(layout.frames, layout.tokens_per_frame, 3)
    want = result.plan.gather(cells)[order]
    got = prepared["position_ids"][:, 0, prepared["input_ids"][0] == model.config.video_token_id].T
    assert torch.equal(got, want)
    assert abs(result.retention - 0.25) <= 1 / layout.tokens_per_frame
    assert torch.isfinite(_logits(model, prepared)).all()


def test_batch_of_two_equals_each_alone(qwen3):
    model, processor, inputs, frames = qwen3
    short_text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]}],
        add_generation_prompt=True)
    long_text = processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    metas = [{"fps": 8.0, "total_num_frames": 32, "frames_indices": list(range(0, 32, 4))},
             {"fps": 8.0, "total_num_frames": 16, "frames_indices": list(range(0, 16, 4))}]
    batch = processor(text=[long_text, short_text], videos=[frames, frames[:4]], video_metadata=metas,
                      do_sample_frames=False, return_tensors="pt", padding=True, padding_side="left")
    seam = Qwen3VLCompression(model)
    seam.set_compression("aot@0.3")
    together = _logits(model, seam.prepare(**batch))[:, -1]
    for row, (t, v, m) in enumerate([(long_text, frames, metas[0]), (short_text, frames[:4], metas[1])]):
        alone = processor(text=[t], videos=[v], video_metadata=[m], do_sample_frames=False, return_tensors="pt")
        torch.testing.assert_close(together[row], _logits(model, seam.prepare(**alone))[0, -1], rtol=1e-4, atol=1e-5)


def _greedy_without_cache(model, prepared, steps):
    ids, positions = prepared["input_ids"], prepared["position_ids"]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, position_ids=positions, mm_encoder_outputs=prepared["mm_encoder_outputs"],
                           use_cache=False).logits[:, -1]
            token = logits.argmax(-1)
            out.append(int(token))
            ids = torch.cat([ids, token[:, None]], 1)
            positions = torch.cat([positions, positions[..., -1:] + 1], -1)
    return out


@pytest.mark.parametrize("spec", [None, "aot@0.25", "even_frames_only"])
def test_generation_with_the_kv_cache(qwen3, spec):
    model, _, inputs, _ = qwen3
    steps = 4
    with _even_frames_registered():
        seam = Qwen3VLCompression(model)
        seam.set_compression(_EvenFramesConfig() if spec == "even_frames_only" else spec)
        new = seam.generate(**dict(inputs), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        prepared = seam.prepare(**inputs)
    assert new[0].tolist() == _greedy_without_cache(model, prepared, steps)
    if spec is None:
        with torch.no_grad():
            full = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        assert new[0].tolist() == full[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("method", sorted(set(vz.list_methods()) - {"full"}))
def test_every_registered_method_through_the_model(qwen3, method):
    model, _, inputs, frames = qwen3
    seam = Qwen3VLCompression(model)
    seam.set_compression(f"{method}@0.25")
    prepared = seam.prepare(**inputs, questions=["What moves in the video?"])
    (stats,) = seam.last_visual_stats
    plain = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert stats.visual_tokens_plain == plain and stats.visual_tokens < plain and stats.frames == len(frames)
    assert int((prepared["input_ids"] == model.config.video_token_id).sum()) == stats.visual_tokens
    for (level,) in prepared["mm_encoder_outputs"]["video"].deepstack_features:
        assert level.shape[0] == stats.visual_tokens  # each LLM layer sees features for exactly the remaining tokens
    assert torch.isfinite(_logits(model, prepared)).all()


# ---------------------------------------------------------------------------------------- bad input


def test_a_deepstack_level_of_another_length_is_refused_naming_it():
    from types import SimpleNamespace

    from llava.model.qwen_vl.common import QwenVLCompression

    output = SimpleNamespace(deepstack_features=[torch.zeros(36, 4), torch.zeros(35, 4)])
    with pytest.raises(ValueError, match=r"deepstack level 1 has 35 tokens; expected 36"):
        QwenVLCompression._levels_of(output, 36)


def test_one_temporal_token_is_refused(qwen3):
    model, processor, _, frames = qwen3
    inputs = _inputs(processor, frames[:2])
    assert inputs["video_grid_thw"][0, 0] == 1
    seam = Qwen3VLCompression(model)
    seam.set_compression("aot@0.25")
    with pytest.raises(ValueError, match=r"video 0 has 1 temporal token .*expected at least 2 temporal tokens"):
        seam.prepare(**inputs)


def test_another_family_is_refused(tmp_path):
    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl

    other = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(write_tiny_qwen2_5_vl(tmp_path / "q25"))
    with pytest.raises(ValueError,
                       match=r"model_type='qwen2_5_vl' is not valid here; expected 'qwen3_vl' or 'qwen3_vl_moe'"):
        Qwen3VLCompression(other)


def test_the_moe_class_shares_the_visual_path(qwen3):
    """Qwen3VLMoeForConditionalGeneration (tiny, 4 experts): keeping every token gives its logits exactly,
    and a compressed prompt generates."""
    _, processor, inputs, _ = qwen3
    dense = transformers.AutoConfig.from_pretrained(processor.tokenizer.name_or_path)
    text = {k: v for k, v in dense.text_config.to_dict().items() if k not in ("model_type", "architectures")}
    text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    vision = {k: v for k, v in dense.vision_config.to_dict().items() if k not in ("model_type", "architectures")}
    config = transformers.Qwen3VLMoeConfig(
        text_config=text, vision_config=vision, image_token_id=dense.image_token_id,
        video_token_id=dense.video_token_id,
        vision_start_token_id=dense.vision_start_token_id, vision_end_token_id=dense.vision_end_token_id)
    torch.manual_seed(0)
    moe = transformers.Qwen3VLMoeForConditionalGeneration(config).eval()
    with torch.no_grad():
        want = moe(**inputs).logits
    seam = Qwen3VLCompression(moe)
    seam.set_compression("aot@1.0")
    assert torch.equal(_logits(moe, seam.prepare(**inputs)), want)
    seam.set_compression("aot@0.25")
    assert seam.generate(**dict(inputs), max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 3)

"""Attention scores from transformers' Qwen2.5-VL vision tower, against transformers' own eager
attention weights (recorded from its attention function during a stock forward), on the tiny
checkpoint with a real decoded video: windowed and full-attention blocks, two videos of different
grids in one call."""

from __future__ import annotations

import pytest
import torch

from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl
from llava.model.qwen_vl.scores import default_score_layers, video_features_with_scores
from llava.video import load_video, write_synthetic_video

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
qwen = pytest.importorskip("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")


@pytest.fixture(scope="module")
def tower_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-scores")
    path = write_tiny_qwen2_5_vl(root / "ckpt", max_pixels=224 * 224)  # grids larger than one 8x8-patch window
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    processor = transformers.AutoProcessor.from_pretrained(path)
    a = load_video(write_synthetic_video(root / "a.mp4", frames=24, seed=1, size=(224, 160)), max_frames=4).frames
    b = load_video(write_synthetic_video(root / "b.mp4", frames=24, seed=2), max_frames=6).frames
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    inputs = processor(text=[text, text], videos=[a, b], return_tensors="pt", padding=True)
    return model, inputs["pixel_values_videos"], inputs["video_grid_thw"]


def _reference(model, pixels, grid, layers):
    """Stock forward; transformers' eager attention records its weights; scores folded by hand."""
    recorded: dict[int, list[torch.Tensor]] = {}
    blocks = model.model.visual.blocks
    real = qwen.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = real(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        index = next(i for i, blk in enumerate(blocks) if blk.attn is module)
        recorded.setdefault(index, []).append(weights[0].float().sum(1).mean(0))  # (L,) per segment
        return out, weights

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(qwen, "eager_attention_forward", recording)
        out = model.model.visual(pixels, grid_thw=grid)
    merge = model.model.visual.spatial_merge_size
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(grid, spatial_merge_size=merge,
                                              window_size=model.model.visual.window_size,
                                              patch_size=model.model.visual.patch_size, kwargs={})
    order = torch.argsort(window_index)
    scores = [torch.cat(recorded[i]).view(-1, merge * merge).sum(-1)[order] for i in layers]
    return out.pooler_output, scores, {i: len(v) for i, v in recorded.items()}


def test_default_layers_are_the_first_and_last_full_attention_blocks(tower_inputs):
    model, _, _ = tower_inputs
    assert default_score_layers(model.config.vision_config) == (1, 3)


@pytest.mark.parametrize("layers", [(1, 3), (0, 2), (-1,)])
def test_scores_match_transformers_attention_weights(tower_inputs, layers):
    model, pixels, grid = tower_inputs
    with torch.no_grad():
        feats, scores = video_features_with_scores(model.model.visual, pixels, grid, layers, chunk=7)
        stock = model.model.visual(pixels, grid_thw=grid).pooler_output
    assert torch.equal(feats, stock)  # the tower runs unchanged
    ref_feats, ref_scores, segments = _reference(model, pixels, grid, [layer % 4 for layer in layers])
    assert torch.equal(ref_feats, stock)
    temporal = int(grid[:, 0].sum())
    assert segments[1] == segments[3] == temporal  # full attention: one segment per temporal patch
    assert segments[0] > temporal  # windowed blocks: several windows per temporal patch
    tokens = int((grid.prod(-1) // 4).sum())
    for got, want in zip(scores, ref_scores):
        assert got.shape == (tokens,) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # every query's softmax sums to one: per segment the scores add up to its length (in patches)
    assert scores[0].sum().item() == pytest.approx(float(grid.prod(-1).sum()), rel=1e-4)


def test_bad_layer_is_named(tower_inputs):
    model, pixels, grid = tower_inputs
    with pytest.raises(ValueError, match=r"score layer 9 is not valid; expected a block index in \[-4, 3\]"):
        video_features_with_scores(model.model.visual, pixels, grid, (9,))


# ---------------------------------------------------------------------------------------- Qwen3-VL


@pytest.fixture(scope="module")
def qwen3_tower_inputs(tmp_path_factory):
    from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl

    root = tmp_path_factory.mktemp("qwen3-scores")
    model = transformers.Qwen3VLForConditionalGeneration.from_pretrained(write_tiny_qwen3_vl(root / "ckpt"),
                                                                        attn_implementation="eager").eval()
    processor = transformers.AutoProcessor.from_pretrained(root / "ckpt")
    a = load_video(write_synthetic_video(root / "a.mp4", frames=24, seed=1, size=(128, 160)), max_frames=4).frames
    b = load_video(write_synthetic_video(root / "b.mp4", frames=24, seed=2), max_frames=6).frames
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    metas = [{"fps": 8.0, "total_num_frames": 24, "frames_indices": list(range(0, 24, 24 // n))[:n]} for n in (4, 6)]
    inputs = processor(text=[text, text], videos=[a, b], video_metadata=metas, do_sample_frames=False,
                       return_tensors="pt", padding=True)
    return model, inputs["pixel_values_videos"], inputs["video_grid_thw"]


def test_qwen3_default_layers_are_the_first_deepstack_block_and_the_last(qwen3_tower_inputs):
    model, _, _ = qwen3_tower_inputs
    assert model.config.vision_config.deepstack_visual_indexes == [1, 2]
    assert default_score_layers(model.config.vision_config) == (1, 3)


def test_qwen3_scores_match_transformers_attention_weights_and_keep_the_deepstack_levels(qwen3_tower_inputs):
    from llava.model.qwen_vl.scores import vision_output_with_scores

    q3 = pytest.importorskip("transformers.models.qwen3_vl.modeling_qwen3_vl")
    model, pixels, grid = qwen3_tower_inputs
    visual = model.model.visual
    with torch.no_grad():
        out, scores = vision_output_with_scores(visual, pixels, grid, (1, 3), chunk=5)
        stock = visual(pixels, grid_thw=grid)
    assert torch.equal(out.pooler_output, stock.pooler_output)  # the tower runs unchanged
    assert all(torch.equal(a, b) for a, b in zip(out.deepstack_features, stock.deepstack_features))
    recorded: dict[int, list[torch.Tensor]] = {}
    real = q3.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        result, weights = real(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        index = next(i for i, blk in enumerate(visual.blocks) if blk.attn is module)
        recorded.setdefault(index, []).append(weights[0].float().sum(1).mean(0))
        return result, weights

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(q3, "eager_attention_forward", recording)
        visual(pixels, grid_thw=grid)
    assert len(recorded[1]) == int(grid[:, 0].sum())  # global attention: one segment per temporal patch
    for layer, got in zip((1, 3), scores):  # no window order: the raster order of the placeholders
        torch.testing.assert_close(got, torch.cat(recorded[layer]).view(-1, 4).sum(-1), rtol=1e-5, atol=1e-5)

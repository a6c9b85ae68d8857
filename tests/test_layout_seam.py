"""The model supplies the token layout; every registered method works on it.

Two tiny checkpoints in LLaVA-NeXT's on-disk layout, one per released layout: LLaVA-OneVision
(bilinear pooling, one newline after the video) and LLaVA-Video (average pooling, a newline after
every pooled row). Through the model: ``full`` and ``aot@1.0`` splice exactly the uncompressed
sequence (same length, same logits), every method hits its budget within a point of the model's own
grid, every token says where it came from, and the plan replays the reduction.
"""

from __future__ import annotations

import pytest
import torch
import toy_method as toy

import visionzip as vz
from llava.constants import IMAGE_TOKEN_INDEX
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.model.builder import load_pretrained_model
from llava.video import load_video, write_synthetic_video

FRAMES = 16
LAYOUTS = {
    "onevision": {"newline_position": "one_token", "pool_mode": "bilinear"},
    "video": {"newline_position": "grid", "pool_mode": "average"},
}


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    video = write_synthetic_video(tmp_path_factory.mktemp("seam") / "v.mp4", frames=40, seed=5)
    return load_video(video, max_frames=FRAMES).frames


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def loaded(request, tmp_path_factory, pixels):
    ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "ckpt", **LAYOUTS[request.param])
    tok, model, processor, _ = load_pretrained_model(str(ckpt), None, "llava_qwen", device_map=None,
                                                     torch_dtype="float32", attn_implementation="sdpa")
    values = processor.preprocess(pixels, return_tensors="pt")["pixel_values"]
    ids = torch.tensor([tok("<|im_start|>user\n").input_ids + [IMAGE_TOKEN_INDEX]
                        + tok("\nWhat moves?<|im_end|>").input_ids])
    return request.param, model, values, ids


def _run(model, values, ids, spec):
    model.set_compression(spec)
    try:
        with torch.no_grad():
            tokens, stats = model.encode_multimodal([values], ["video"])
            logits = model(input_ids=ids, images=[values], modalities=["video"]).logits
    finally:
        model.set_compression(None)
    return tokens[0], stats[0], logits


def test_layout_comes_from_the_model(loaded):
    name, model, _, _ = loaded
    layout = model.video_layout(FRAMES)
    side = model.get_vision_tower().num_patches_per_side
    assert layout.grid == (side, side) and layout.frames == FRAMES
    if name == "onevision":
        h = -(-side // 2)
        assert layout.pooled_grid == (h, h) and layout.num_tokens == FRAMES * h * h + 1
    else:
        h = side // 2
        assert layout.pooled_grid == (h, h) and layout.num_tokens == FRAMES * h * (h + 1)


@pytest.mark.parametrize("spec", ["full", "aot@1.0"])
def test_identity_splices_the_uncompressed_sequence(loaded, spec):
    name, model, values, ids = loaded
    plain, plain_stats, plain_logits = _run(model, values, ids, None)
    tokens, stats, logits = _run(model, values, ids, spec)
    assert plain.shape[0] == model.video_layout(FRAMES).num_tokens == stats.visual_tokens_plain
    assert tokens.shape == plain.shape and torch.equal(tokens, plain)
    assert logits.shape == plain_logits.shape and torch.equal(logits, plain_logits)
    assert stats.retention == 1.0


@pytest.mark.parametrize("retention", [0.10, 0.15, 0.25])
@pytest.mark.parametrize("method", [m for m in vz.list_methods() if m != "full"])
def test_every_method_hits_its_budget_on_the_models_grid(loaded, method, retention):
    name, model, values, ids = loaded
    _, stats, _ = _run(model, values, ids, f"{method}@{retention}")
    layout = model.video_layout(FRAMES)
    res = stats.result
    newlines = int(res.is_newline.sum())
    # retention against the model's own pooled grid, counted here from the tokens themselves
    assert res.pooled_grid == layout.pooled_grid
    if method == "aot":  # the paper counts the frames' newlines, whether or not the inter stage kept them
        newlines = layout.num_newlines if name == "video" else newlines
    measured = (res.num_tokens - newlines) / layout.num_cells
    assert abs(measured - retention) <= 0.01, (method, retention, measured)
    assert abs(stats.retention - retention) <= 0.01


@pytest.mark.parametrize("spec", ["aot@0.15", "paper_ov_10pct", "visionzip@0.15", "dycoke@0.25", "pool@0.15"])
def test_provenance_and_plan(loaded, spec):
    name, model, values, ids = loaded
    _, stats, _ = _run(model, values, ids, spec)
    res = stats.result
    layout = res.plan.layout
    h, w = layout.pooled_grid
    pos, nl = res.positions, res.is_newline
    assert pos.shape == (res.num_tokens, 3) and nl.shape == (res.num_tokens,)
    cells = pos[~nl]
    assert (cells[:, 0] >= 0).all() and (cells[:, 0] < FRAMES).all()
    assert (cells[:, 1] >= 0).all() and (cells[:, 1] < h).all() and (cells[:, 2] >= 0).all() and (cells[:, 2] < w).all()
    assert (pos[nl][:, 2] == -1).all()
    if name == "video" and not spec.startswith(("aot", "paper")):  # newline tokens are the model's newline
        # (AOT's inter-frame stage folds tokens into a keyframe's newlines too, as released)
        assert torch.equal(res.tokens[nl], layout.newline.expand(int(nl.sum()), -1).to(res.tokens.dtype))
    # the plan applied to the features reproduces the tokens exactly
    model.set_compression(None)
    with torch.no_grad():
        feats = model.get_model().mm_projector(model.get_vision_tower()(values.to(model.dtype)))
    assert torch.equal(res.plan.apply(feats, layout.newline), res.tokens)
    # and carries per-cell values (position ids) to every token from the cell it stands for
    ids_on_grid = layout.positions()  # (F, n, 3)
    assert torch.equal(res.plan.gather(ids_on_grid, newline=-1)[~nl], cells)


def test_stride_is_honoured(tmp_path, pixels):
    ckpt = write_tiny_checkpoint(tmp_path / "s3")
    _, model, processor, _ = load_pretrained_model(str(ckpt), None, "llava_qwen", device_map=None,
                                                   torch_dtype="float32",
                                                   overwrite_config={"mm_spatial_pool_stride": 3})
    values = processor.preprocess(pixels, return_tensors="pt")["pixel_values"]
    side = model.get_vision_tower().num_patches_per_side
    h = -(-side // 3)
    with torch.no_grad():
        plain, stats = model.encode_multimodal([values], ["video"])
    assert plain[0].shape[0] == FRAMES * h * h + 1 == model.video_layout(FRAMES).num_tokens
    model.set_compression("full")
    with torch.no_grad():
        full, _ = model.encode_multimodal([values], ["video"])
    assert torch.equal(full[0], plain[0])
    model.set_compression("random@0.2")
    with torch.no_grad():
        _, stats = model.encode_multimodal([values], ["video"])
    assert stats[0].result.pooled_grid == (h, h) and abs(stats[0].retention - 0.2) <= 0.01


# --------------------------------------------------------------------------------------------------
# a method registered from outside the library runs through the model


@pytest.fixture()
def toy_method():
    with toy.registered() as spec:
        yield spec


def test_toy_method_through_the_model(loaded, toy_method):
    name, model, values, ids = loaded
    assert "every_other" in vz.list_methods()
    calls = []
    tower = model.get_vision_tower()
    real = tower.forward_with_scores
    tower.forward_with_scores = lambda *a, **k: calls.append(k.get("score_layers")) or real(*a, **k)
    try:
        tokens, stats, logits = _run(model, values, ids, {"method": "every_other", "step": 3})
    finally:
        del tower.forward_with_scores
    assert calls and set(calls) == {(-2,)}  # only the layer the method declared
    n = model.video_layout(FRAMES).cells_per_frame
    assert stats.result.stage_tokens["output"] - stats.result.stage_tokens["newlines"] == FRAMES * len(range(0, n, 3))
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------------------------------------------
# bad input


def test_unregistered_method_lists_the_registered_ones():
    with pytest.raises(ValueError, match="'fastv' is not registered; expected one of .*'aot'.*'visionzip'"):
        vz.load_config("fastv@0.1")


def test_layout_that_does_not_match_the_features():
    layout = vz.VideoLayout(frames=4, grid=(6, 6), pool_mode="average")
    x = torch.randn(4, 30, 8)
    with pytest.raises(ValueError, match=r"features has shape \(4, 30, 8\); the layout expects \(4, 36, D\)"):
        vz.compress_video(x, None, None, config=vz.make_config("random", 0.5), layout=layout)
    with pytest.raises(ValueError, match="layout expects"):
        vz.compress_video(torch.randn(5, 36, 8), None, None, config=vz.make_config("random", 0.5), layout=layout)


def test_retention_below_one_token_per_frame():
    layout = vz.VideoLayout(frames=8, grid=(6, 6), pool_mode="average")  # 3x3 = 9 cells per frame
    x, s = torch.randn(8, 36, 8), torch.rand(8, 36)
    for method in ("random", "visionzip", "aot"):
        with pytest.raises(ValueError, match=f"method '{method}'.*at least one token per frame"):
            vz.compress_video(x, s, s, config=vz.make_config(method, 0.05), layout=layout)


def test_scores_a_method_reads_are_required():
    layout = vz.VideoLayout(frames=8, grid=(6, 6), pool_mode="average")
    with pytest.raises(ValueError, match="deep_scores is None .*expected .* method 'visionzip' reads them"):
        vz.compress_video(torch.randn(8, 36, 8), None, None, config=vz.make_config("visionzip", 0.5), layout=layout)


def test_a_model_that_cannot_give_scores(loaded):
    _, model, values, _ = loaded
    tower = model.get_vision_tower()
    tower.forward_with_scores = None  # a tower without the score capture
    model.set_compression("aot@0.2")
    try:
        with pytest.raises(ValueError,
                           match="method 'aot' reads attention scores .* cannot give them; expected a method"):
            model.encode_multimodal([values], ["video"])
        model.set_compression("random@0.2")  # a method that reads none still runs
        with torch.no_grad():
            model.encode_multimodal([values], ["video"])
    finally:
        del tower.forward_with_scores
        model.set_compression(None)

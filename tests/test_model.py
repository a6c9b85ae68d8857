"""The model stack through LLaVA-NeXT's public API: a tiny checkpoint in the original on-disk layout
-> load_pretrained_model -> generate from a decoded mp4, with and without AOT."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as Fn
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

import visionzip
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.mm_utils import KeywordsStoppingCriteria, tokenizer_image_token
from llava.model.builder import CheckpointLayoutError, load_pretrained_model
from llava.video import load_video, write_synthetic_video

FRAMES = 8


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-ov")


@pytest.fixture(scope="session")
def grid_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-video", newline_position="grid",
                                 pool_mode="average")


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return [write_synthetic_video(d / "a.mp4", frames=24, seed=0),
            write_synthetic_video(d / "b.mp4", frames=30, seed=1)]


@pytest.fixture(scope="session")
def loaded(ckpt):
    return load_pretrained_model(str(ckpt), None, "llava-onevision-tiny", device_map="auto", torch_dtype="float32",
                                 attn_implementation="sdpa")


def prompt_ids(tokenizer, question: str) -> torch.Tensor:
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def pixels(processor, video, frames=FRAMES, dtype=torch.float32):
    frames_np = load_video(str(video), max_frames=frames).frames
    return processor.preprocess(frames_np, return_tensors="pt")["pixel_values"].to(dtype)


def generate(model, tokenizer, ids_list, pixel_list, max_new_tokens=6):
    """lmms-eval's batching: right-pad with the pad id, attention mask = ids != pad."""
    pad = tokenizer.pad_token_id
    ids = torch.nn.utils.rnn.pad_sequence(ids_list, batch_first=True, padding_value=pad)
    mask = ids.ne(pad).long()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return model.generate(ids, attention_mask=mask, images=pixel_list, modalities=["video"] * len(ids_list),
                          do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)


def test_loads_original_layout_and_generates(loaded, videos):
    tokenizer, model, processor, context_len = loaded
    assert type(model).__name__ == "LlavaQwenForCausalLM" and context_len == 32768
    assert model.compression is None
    out = generate(model, tokenizer, [prompt_ids(tokenizer, "What moves?")], [pixels(processor, videos[0])])
    assert out.shape[0] == 1 and 1 <= out.shape[1] <= 6
    assert isinstance(tokenizer.batch_decode(out, skip_special_tokens=True)[0], str)
    stats = model.last_visual_stats[0]
    assert stats.modality == "video" and stats.frames == FRAMES
    assert stats.visual_tokens == FRAMES * 14 * 14 + 1  # OV: 196 per frame + one newline


def _reference_plain_tokens(ckpt, frames_px: torch.Tensor) -> torch.Tensor:
    """LLaVA-NeXT's video features computed independently: transformers' SiglipVisionModel with the
    checkpoint's weights, hidden_states[-1] (26th kept layer, before post_layernorm), the projector
    by hand, NCHW bilinear pooling to ceil(27/2), newline appended after the video."""
    cfg = json.loads((ckpt / "config.json").read_text())
    weights = {}
    for f in ckpt.glob("*.safetensors"):
        with safe_open(f, "pt") as fh:
            weights |= {k: fh.get_tensor(k) for k in fh.keys()}
    prefix = "model.vision_tower.vision_tower.vision_model."
    vcfg = SiglipVisionConfig(**cfg["vision_config"], vision_use_head=False)
    vcfg._attn_implementation = "eager"
    tower = SiglipVisionModel(vcfg).eval()
    tower.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    with torch.no_grad():
        hidden = tower(frames_px, output_hidden_states=True).hidden_states[-1]
        x = Fn.linear(hidden, weights["model.mm_projector.0.weight"], weights["model.mm_projector.0.bias"])
        x = Fn.linear(Fn.gelu(x), weights["model.mm_projector.2.weight"], weights["model.mm_projector.2.bias"])
        f_, n, d = x.shape
        side = int(math.sqrt(n))
        x = x.view(f_, side, side, d).permute(0, 3, 1, 2).contiguous()
        x = Fn.interpolate(x, size=[math.ceil(side / 2)] * 2, mode="bilinear").permute(0, 2, 3, 1).reshape(f_, -1, d)
    return torch.cat([x.flatten(0, 1), weights["model.image_newline"][None]])


def test_compression_off_is_plain_llava_next(loaded, ckpt, videos):
    tokenizer, model, processor, _ = loaded
    px = pixels(processor, videos[0])
    tokens, _ = model.encode_multimodal([px], ["video"])
    ref = _reference_plain_tokens(ckpt, px)
    assert tokens[0].shape == ref.shape
    torch.testing.assert_close(tokens[0], ref, rtol=1e-4, atol=1e-5)
    # and the splice puts exactly those tokens where <image> was, labels ignored there
    ids = prompt_ids(tokenizer, "Why?")[None]
    *_, embeds, labels = model.prepare_inputs_labels_for_multimodal(
        ids, None, torch.ones_like(ids), None, ids.clone(), [px], ["video"])
    at = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    assert embeds.shape[1] == ids.shape[1] - 1 + ref.shape[0]
    torch.testing.assert_close(embeds[0, at : at + ref.shape[0]], ref, rtol=1e-4, atol=1e-5)
    assert (labels[0, at : at + ref.shape[0]] == IGNORE_INDEX).all()
    text = model.get_model().embed_tokens(ids[0, :at])
    torch.testing.assert_close(embeds[0, :at], text)


def _llava_next_plain(feats: torch.Tensor, newline: torch.Tensor, mode: str, position: str) -> torch.Tensor:
    """LLaVA-NeXT's uncompressed video tokens written out as it writes them: contiguous NCHW pooling with
    stride 2, then ``add_token_per_grid`` / ``add_token_per_frame`` / one newline / none."""
    f_, n, d = feats.shape
    side = int(math.sqrt(n))
    x = feats.view(f_, side, side, d).permute(0, 3, 1, 2).contiguous()
    if mode == "bilinear":
        x = Fn.interpolate(x, size=[math.ceil(side / 2)] * 2, mode="bilinear")
    else:
        x = (Fn.avg_pool2d if mode == "average" else Fn.max_pool2d)(x, 2)
    h = x.shape[-1]
    x = x.permute(0, 2, 3, 1)  # (F, h, h, D)
    if position == "grid":
        x = x.permute(3, 0, 1, 2).flatten(1, 2)  # (D, F*h, h)
        x = torch.cat([x, newline[:, None, None].expand(d, f_ * h, 1)], -1)
        return x.flatten(1, 2).transpose(0, 1)
    x = x.reshape(f_, h * h, d)
    if position == "frame":
        x = torch.cat([x.permute(2, 0, 1), newline[:, None, None].expand(d, f_, 1)], -1)
        return x.permute(1, 2, 0).flatten(0, 1)
    x = x.flatten(0, 1)
    return torch.cat([x, newline[None]]) if position == "one_token" else x


@pytest.mark.parametrize("mode, position", [("bilinear", "one_token"), ("average", "grid"), ("max", "frame"),
                                            ("bilinear", "no_token"), ("average", "one_token")])
def test_uncompressed_path_is_llava_next_bit_for_bit(loaded, mode, position):
    """Without compression the seam runs visionzip's ``full`` on the model's layout: the tokens and, under
    autograd, the gradients of the features and the newline equal LLaVA-NeXT's own arithmetic exactly."""
    from llava.model.seam import VisualSeam

    _, model, _, _ = loaded
    config = model.config
    saved = (config.mm_spatial_pool_mode, config.mm_newline_position)
    config.mm_spatial_pool_mode, config.mm_newline_position = mode, position
    try:
        layout = model.video_layout(3)
    finally:
        config.mm_spatial_pool_mode, config.mm_newline_position = saved
    n, d = layout.tokens_per_frame, model.config.hidden_size
    feats = torch.randn(3, n, d, generator=torch.Generator().manual_seed(0), requires_grad=True)
    newline = layout.newline.detach().clone().requires_grad_(True)
    (video,) = VisualSeam(None, timed=False, cuda=False, samples=1).videos([feats], {}, [layout.with_newline(newline)])
    ref_feats = feats.detach().clone().requires_grad_(True)
    ref_newline = newline.detach().clone().requires_grad_(True)
    ref = _llava_next_plain(ref_feats, ref_newline, mode, position)
    assert torch.equal(video.tokens, ref) and video.record.result is None
    assert video.record.visual_tokens == video.record.visual_tokens_plain == layout.num_tokens == ref.shape[0]
    weights = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    (video.tokens * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.equal(feats.grad, ref_feats.grad)
    if position == "no_token":
        assert newline.grad is None and ref_newline.grad is None
    else:
        assert torch.equal(newline.grad, ref_newline.grad)


def test_mm_layout_keys_default_and_are_checked(ckpt):
    """The ``mm_*`` layout keys: LLaVA-NeXT's defaults where a checkpoint leaves them out (not written back
    when saved), and a ValueError naming the key, the value and the choices for a bad one, whether it
    comes from config.json, overwrite_config or an assignment."""
    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.language_model.llava_qwen import LlavaQwenConfig

    for cls in (LlavaQwenConfig, LlavaConfig):
        bare = cls()
        assert (bare.mm_patch_merge_type, bare.mm_spatial_pool_mode, bare.mm_spatial_pool_stride,
                bare.mm_newline_position) == ("flat", "bilinear", 2, "one_token")
        assert not any(k.startswith("mm_") for k in bare.to_dict())
        assert cls(mm_spatial_pool_mode=None).mm_spatial_pool_mode == "bilinear"  # null reads as left out
        with pytest.raises(ValueError, match=r"mm_spatial_pool_mode='nearest' is not valid; expected one of "
                                             r"'bilinear', 'average', 'max'"):
            cls(mm_spatial_pool_mode="nearest")
    config = LlavaQwenConfig()
    with pytest.raises(ValueError, match=r"mm_newline_position='row' is not valid; expected one of 'grid'"):
        config.mm_newline_position = "row"
    with pytest.raises(ValueError, match=r"mm_spatial_pool_stride=0 is not valid; expected an integer >= 1"):
        config.mm_spatial_pool_stride = 0
    with pytest.raises(ValueError, match=r"mm_patch_merge_type='spatial_maxpool2x2' is not valid; expected one of"):
        load_pretrained_model(str(ckpt), None, "llava_qwen", device_map=None, torch_dtype="float32",
                              attn_implementation="sdpa",
                              overwrite_config={"mm_patch_merge_type": "spatial_maxpool2x2"})


def test_aot_through_overwrite_config(ckpt, videos):
    tokenizer, model, processor, _ = load_pretrained_model(
        str(ckpt), None, "tiny", torch_dtype="float32", attn_implementation="sdpa",
        overwrite_config={"aot_compression": "paper_ov_10pct"})
    assert model.compression == visionzip.get_preset("paper_ov_10pct")
    px = pixels(processor, videos[0])
    out = generate(model, tokenizer, [prompt_ids(tokenizer, "What moves?")], [px])
    assert out.shape[1] >= 1
    stats = model.last_visual_stats[0]
    assert stats.result is not None and stats.visual_tokens == stats.result.num_tokens < stats.visual_tokens_plain
    # the tokens spliced are compress_video of the projected features and the tower's scores
    tower = model.get_vision_tower()
    with torch.no_grad():
        feats, (shallow, deep) = tower.forward_with_scores(px, score_layers=(5, -2))
        direct = visionzip.compress_video(model.get_model().mm_projector(feats), shallow, deep,
                                          config=model.compression, grid=(27, 27))
    assert torch.equal(direct.tokens, model.encode_multimodal([px], ["video"])[0][0])


def test_set_compression_on_an_instance_leaves_others_alone(ckpt):
    _, a, _, _ = load_pretrained_model(str(ckpt), None, "tiny", torch_dtype="float32", attn_implementation="sdpa")
    _, b, _, _ = load_pretrained_model(str(ckpt), None, "tiny", torch_dtype="float32", attn_implementation="sdpa")
    a.set_compression("ov_25pct")
    assert a.compression.num_anchors == 270 and b.compression is None
    assert a.config.aot_compression["num_anchors"] == 270 and getattr(b.config, "aot_compression", None) is None
    a.set_compression("none")
    assert a.compression is None


@pytest.mark.parametrize("compression", ["none", "paper_ov_10pct"])
def test_batch_of_two_equals_two_single_runs(loaded, videos, compression):
    tokenizer, model, processor, _ = loaded
    model.set_compression(compression)
    try:
        ids = [prompt_ids(tokenizer, "What is moving in the video?"), prompt_ids(tokenizer, "Colour?")]
        px = [pixels(processor, v) for v in videos]
        batch = generate(model, tokenizer, ids, px)
        batch_stats = [s.visual_tokens for s in model.last_visual_stats]
        for i in range(2):
            single = generate(model, tokenizer, [ids[i]], [px[i]])
            assert model.last_visual_stats[0].visual_tokens == batch_stats[i]
            row = batch[i][: single.shape[1]]
            assert torch.equal(row, single[0]), (compression, i, row, single)
    finally:
        model.set_compression(None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pixels_on_cpu_model(loaded, videos, dtype):
    tokenizer, model, processor, _ = loaded
    out = generate(model, tokenizer, [prompt_ids(tokenizer, "Q?")], [pixels(processor, videos[0], dtype=dtype)])
    assert out.shape[0] == 1


def test_bf16_model_with_aot(ckpt, videos):
    tokenizer, model, processor, _ = load_pretrained_model(
        str(ckpt), None, "tiny", torch_dtype="bfloat16", attn_implementation="sdpa",
        overwrite_config={"aot_compression": "paper_ov_10pct"})
    assert model.dtype == torch.bfloat16
    out = generate(model, tokenizer, [prompt_ids(tokenizer, "Q?")], [pixels(processor, videos[0], dtype=torch.float16)])
    assert out.shape[0] == 1
    assert model.last_visual_stats[0].result.tokens.dtype == torch.bfloat16


def test_grid_newlines_llava_video_with_aot(grid_ckpt, videos):
    """A LLaVA-Video checkpoint (average pooling, a newline after every row) under its paper preset; its
    uncompressed layout is test_uncompressed_path_is_llava_next_bit_for_bit's ``average`` / ``grid``."""
    tokenizer, model, processor, _ = load_pretrained_model(str(grid_ckpt), None, "tiny", torch_dtype="float32",
                                                           attn_implementation="sdpa")
    px = pixels(processor, videos[0])
    assert model.video_layout(FRAMES).num_tokens == FRAMES * 13 * 14  # 27 -> 13, a newline after every row
    model.set_compression("paper_video_k180")
    tokens, stats = model.encode_multimodal([px], ["video"])
    assert stats[0].result.stage_tokens["newlines"] == FRAMES * 13
    assert 0 < stats[0].retention < 0.5


def test_single_image_still_works(loaded):
    tokenizer, model, processor, _ = loaded
    image = torch.randn(3, 54, 54)
    ids = prompt_ids(tokenizer, "Describe the image.")[None]
    out = model.generate(ids, images=[image], modalities=["image"], image_sizes=[(54, 54)], do_sample=False,
                         max_new_tokens=3, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 1
    assert model.last_visual_stats[0].visual_tokens == 27 * 27 + 1  # one crop + newline


def test_anyres_image(loaded):
    from PIL import Image

    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = loaded
    img = Image.new("RGB", (160, 90), (120, 30, 200))
    cfg = model.config
    # the tiny tower works at 54 px: scale the pinpoints to its size
    cfg_small = type("C", (), {"image_aspect_ratio": "anyres_max_9",
                               "image_grid_pinpoints": [[54 * w, 54 * h] for w in range(1, 4) for h in range(1, 4)]})()
    px = process_images([img], processor, cfg_small)
    old = cfg.image_grid_pinpoints
    cfg.image_grid_pinpoints = cfg_small.image_grid_pinpoints
    try:
        tokens, stats = model.encode_multimodal([px[0]], ["image"], image_sizes=[img.size])
    finally:
        cfg.image_grid_pinpoints = old
    assert px[0].shape[0] > 1 and tokens[0].shape[0] > 27 * 27
    assert torch.isfinite(tokens[0]).all()


def test_placeholder_count_mismatch_is_loud(loaded, videos):
    tokenizer, model, processor, _ = loaded
    ids = prompt_ids(tokenizer, "Q?")[None]
    px = pixels(processor, videos[0])
    with pytest.raises(ValueError, match="placeholder"):
        model.generate(ids, images=[px, px], modalities=["video", "video"], max_new_tokens=2)


def test_stopping_criteria_api(loaded, videos):
    tokenizer, model, processor, _ = loaded
    ids = prompt_ids(tokenizer, "Q?")[None]
    stop = KeywordsStoppingCriteria(["<|im_end|>"], tokenizer, ids)
    out = model.generate(ids, images=[pixels(processor, videos[0])], modalities=["video"], do_sample=False,
                         max_new_tokens=4, stopping_criteria=[stop], pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] <= 4


# -- bad checkpoints


def test_missing_key_is_listed(ckpt, tmp_path):
    bad = tmp_path / "bad"
    write_tiny_checkpoint(bad, shards=1)
    with safe_open(bad / "model.safetensors", "pt") as fh:
        sd = {k: fh.get_tensor(k) for k in fh.keys() if k != "model.mm_projector.2.bias"}
    sd["model.extra_head.weight"] = torch.zeros(2)
    save_file(sd, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointLayoutError,
                       match=r"missing: \[model\.mm_projector\.2\.bias\].*unexpected: \[model\.extra_head\.weight\]"):
        load_pretrained_model(str(bad), None, "tiny", torch_dtype="float32", attn_implementation="sdpa")


def test_llava_hf_layout_is_rejected(tmp_path):
    config = {"model_type": "llava_onevision", "text_config": {"model_type": "qwen2"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointLayoutError, match="llava-hf"):
        load_pretrained_model(str(tmp_path), None, "x")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointLayoutError, match="config.json"):
        load_pretrained_model(str(tmp_path), None, "x")


def test_unknown_preset_in_overwrite_config(ckpt):
    with pytest.raises(ValueError, match="unknown compression preset 'paper_ov_99pct'.*paper_ov_10pct"):
        load_pretrained_model(str(ckpt), None, "x", torch_dtype="float32", attn_implementation="sdpa",
                              overwrite_config={"aot_compression": "paper_ov_99pct"})


# -- the console script, as a user runs it


def test_aot_infer_cli(ckpt, videos, tmp_path):
    out = tmp_path / "stats.json"
    run = subprocess.run(
        [sys.executable, "-m", "llava.cli", "infer", "--model", str(ckpt), "--video", str(videos[0]), "--question",
         "What moves?", "--compression", "paper_ov_10pct", "--max-frames", "8", "--dtype", "float32",
         "--max-new-tokens", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "answer:" in run.stdout and "retention (paper definition)" in run.stdout and "prefill TFLOPs" in run.stdout
    stats = json.loads(out.read_text())
    assert stats["frames"] == 8 and 0 < stats["visual_tokens"] < stats["visual_tokens_plain"]


def test_aot_infer_cli_errors(ckpt, tmp_path):
    image = tmp_path / "still.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for args, message in [(["--video", str(image)], "image"), (["--video", str(tmp_path / "nope.mp4")], "nope.mp4"),
                          (["--video", str(image), "--compression", "bogus"], "unknown compression preset")]:
        run = subprocess.run([sys.executable, "-m", "llava.cli", "infer", "--model", str(ckpt), "--question", "Q",
                              "--dtype", "float32", *args], capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)


def test_aot_demo_cli(tmp_path):
    run = subprocess.run([sys.executable, "-m", "llava.cli", "demo", "--out", str(tmp_path), "--frames", "8"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("retention (paper definition)") == 2
    png = tmp_path / "aot_tokens.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads((tmp_path / "demo_stats.json").read_text())
    assert stats["paper_ov_10pct"]["visual_tokens"] < stats["none"]["visual_tokens"]


# -- what lmms-eval's built-in llava_onevision / llava_vid adapters (0.7.3) import and call


LMMS_EVAL_BUILTIN_IMPORTS = [
    ("llava.constants", ["DEFAULT_IMAGE_TOKEN", "DEFAULT_IM_END_TOKEN", "DEFAULT_IM_START_TOKEN", "IGNORE_INDEX",
                         "IMAGE_TOKEN_INDEX"]),
    ("llava.conversation", ["SeparatorStyle", "conv_templates"]),
    ("llava.mm_utils", ["KeywordsStoppingCriteria", "get_model_name_from_path", "process_images",
                        "tokenizer_image_token"]),
    ("llava.model.builder", ["load_pretrained_model"]),
    ("llava.model.language_model.llava_llama", ["LlavaConfig"]),
    ("llava.model.language_model.llava_qwen", ["LlavaQwenConfig"]),
]


@pytest.mark.parametrize(("module", "names"), LMMS_EVAL_BUILTIN_IMPORTS)
def test_names_the_lmms_eval_builtin_adapters_import(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert all(hasattr(mod, n) for n in names)


def test_builtin_adapter_call_shape(ckpt, videos):
    """llava_onevision's call: multimodal=True, attn_implementation, customized_config as a JSON path,
    overwrite_config with the pool keys; frames .half() on a CPU model; right-padded batch."""
    tokenizer, model, processor, _ = load_pretrained_model(
        str(ckpt), None, "llava_qwen", device_map="cpu", multimodal=True, attn_implementation="sdpa",
        customized_config=str(ckpt / "config.json"), torch_dtype="float32",
        overwrite_config={"mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "bilinear"})
    frames = pixels(processor, videos[0], dtype=torch.float16)
    out = generate(model, tokenizer, [prompt_ids(tokenizer, "Q?")], [frames])
    assert out.shape[0] == 1


def test_missing_customized_config(ckpt):
    with pytest.raises(CheckpointLayoutError, match="customized_config"):
        load_pretrained_model(str(ckpt), None, "x", customized_config=str(ckpt / "nope.json"))

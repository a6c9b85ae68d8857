"""On a CUDA device, the compression and every family's seam give the CPU's results.

Run with ``python -m pytest -m gpu tests/test_gpu.py`` (``scripts/bench/gpu.sh`` does); without CUDA
the whole module is skipped. Each check builds the same inputs and weights on the CPU and on
``DEVICE`` and compares, with TF32 switched off so that float32 means float32 on both:

* ``visionzip.compress_video`` for every preset: float32 on the device equals the CPU within
  :data:`F32_TOL` relative error (``||a - b|| / ||b||``) with the kept, merged and pooled masks equal;
  bfloat16 features on the device give the same token count, kept / merged masks that agree with the
  float32 CPU ones on at least :data:`BF16_AGREEMENT` of the entries (a near-tie may flip), and
  tokens within :data:`BF16_TOL` relative error of the float32 features reduced by the same plan
  (of the float32 CPU tokens where the kept masks are equal);
* the tiny LLaVA-OneVision checkpoint and tiny Qwen2.5-VL / Qwen3-VL, with ``none`` and
  ``aot@0.25``: visual tokens, positions and the last position's logits within :data:`F32_TOL`;
* the flash-attention-2 path with score capture (skipped without ``flash_attn``): in bfloat16 the
  scores captured on the side, the features and the LLM's logits equal those of an sdpa run within
  :data:`FLASH_TOL`, and compression reading those scores runs.
"""

from __future__ import annotations

import pytest
import torch

import visionzip as vz
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression
from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression
from llava.model.qwen_vl.scores import video_features_with_scores
from llava.video import load_video, write_synthetic_video

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("needs a CUDA device: torch.cuda.is_available() is False", allow_module_level=True)

transformers = pytest.importorskip("transformers")

#: float32 on the device vs the CPU: relative error of tokens, embeddings and logits
F32_TOL = 1e-4
#: bfloat16 features on the device: relative error of the tokens vs the float32 features reduced by
#: the same plan (and vs the float32 CPU tokens where the selection is the same)
BF16_TOL = 1e-2
#: bfloat16 features on the device: the least fraction of kept / merged mask entries equal to float32's
BF16_AGREEMENT = 0.99
#: flash-attention-2 vs sdpa, both bfloat16 on the device: relative error of features and scores
FLASH_TOL = 3e-2
SPECS = [None, "aot@0.25"]
QUESTION = "What moves in the video?"
PROMPT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.fixture(scope="module", autouse=True)
def exact_float32():
    """TF32 off for matmuls and convolutions (cuDNN allows it by default), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_synthetic_video(tmp_path_factory.mktemp("gpu") / "v.mp4", frames=48, seed=3)


# ------------------------------------------------------------------------------------- compress_video


def _compression_inputs(frames: int = 16, d: int = 32):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 729, d, generator=g)
    features = base + 0.5 * torch.randn(frames, 729, d, generator=g)  # frames that share a scene
    shallow, deep = torch.rand(frames, 729, generator=g), torch.rand(frames, 729, generator=g)
    return features, shallow, deep, torch.randn(d, generator=g)


def _compress(preset: str, features, shallow, deep, newline):
    config = vz.get_preset(preset)
    return vz.compress_video(features, shallow, deep, config=config, grid=(27, 27), image_newline=newline,
                             question=QUESTION)


@pytest.mark.parametrize("preset", vz.list_presets(None))
def test_compress_video_on_the_device_equals_the_cpu(preset):
    features, shallow, deep, newline = _compression_inputs()
    want = _compress(preset, features, shallow, deep, newline)
    moved = [t.to(DEVICE) for t in (features, shallow, deep, newline)]
    got = _compress(preset, *moved)
    assert got.tokens.device.type == torch.device(DEVICE).type
    for name in ("kept_mask", "merged_mask", "pooled_mask", "anchor_mask"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a.cpu(), b), f"{preset}: {name} differs on {DEVICE}"
    assert got.stage_tokens == want.stage_tokens and got.segments == want.segments
    assert rel_err(got.tokens, want.tokens) <= F32_TOL

    half = _compress(preset, moved[0].bfloat16(), *moved[1:3], moved[3].bfloat16())
    assert half.tokens.dtype == torch.bfloat16 and half.tokens.shape == want.tokens.shape
    assert torch.isfinite(half.tokens.float()).all()
    # bfloat16 similarities may flip a near-tie, which moves every later token: the selection is
    # compared by agreement, the arithmetic on the selection bfloat16 made
    for name in ("kept_mask", "merged_mask"):
        a, b = getattr(half, name), getattr(want, name)
        if a is not None:
            assert (a.cpu() == b).float().mean() >= BF16_AGREEMENT, f"{preset}: {name}"
    assert rel_err(half.tokens, half.plan.apply(moved[0], moved[3])) <= BF16_TOL, preset
    if torch.equal(half.kept_mask.cpu(), want.kept_mask):
        assert rel_err(half.tokens, want.tokens) <= BF16_TOL, preset


# ------------------------------------------------------------------------------------- LLaVA-OneVision


@pytest.fixture(scope="module")
def llava_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("gpu_llava") / "ckpt")


def _load_llava(ckpt, device: str, dtype: str = "float32", attn: str = "sdpa"):
    tokenizer, model, processor, _ = load_pretrained_model(str(ckpt), None, "llava_qwen", device_map={"": device},
                                                           torch_dtype=dtype, attn_implementation=attn)
    return tokenizer, model, processor


def _llava_prompt(tokenizer) -> torch.Tensor:
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def _llava_run(model, tokenizer, pixels, spec):
    model.set_compression(spec)
    device = model.device
    with torch.no_grad():
        tokens, _ = model.encode_multimodal([pixels.to(device)], ["video"])
        logits = model(_llava_prompt(tokenizer).to(device), images=[pixels.to(device)], modalities=["video"]).logits
    return tokens[0], logits[0, -1]


@pytest.mark.parametrize("spec", SPECS)
def test_llava_seam_on_the_device_equals_the_cpu(llava_ckpt, video, spec):
    tokenizer, cpu_model, processor = _load_llava(llava_ckpt, "cpu")
    _, dev_model, _ = _load_llava(llava_ckpt, DEVICE)
    pixels = processor.preprocess(load_video(video, max_frames=16).frames, return_tensors="pt")["pixel_values"]
    want_tokens, want_logits = _llava_run(cpu_model, tokenizer, pixels, spec)
    got_tokens, got_logits = _llava_run(dev_model, tokenizer, pixels, spec)
    assert rel_err(got_tokens, want_tokens) <= F32_TOL
    assert rel_err(got_logits, want_logits) <= F32_TOL


# ------------------------------------------------------------------------------------- Qwen2.5-VL / Qwen3-VL


def _qwen_inputs(processor, frames, family: str):
    text = processor.apply_chat_template(PROMPT, add_generation_prompt=True)
    if family == "qwen2_5_vl":
        return processor(text=[text], videos=[frames], return_tensors="pt")
    meta = {"fps": 8.0, "total_num_frames": 4 * len(frames), "frames_indices": list(range(0, 4 * len(frames), 4))}
    return processor(text=[text], videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt")


#: family -> (checkpoint writer and its options, transformers class, seam, video size (H, W)), as the
#: family's seam test drives it
QWEN = {
    "qwen2_5_vl": (write_tiny_qwen2_5_vl, {"max_pixels": 168 * 224}, "Qwen2_5_VLForConditionalGeneration",
                   Qwen25VLCompression, (168, 224)),
    "qwen3_vl": (write_tiny_qwen3_vl, {}, "Qwen3VLForConditionalGeneration", Qwen3VLCompression, (128, 160)),
}


@pytest.fixture(scope="module", params=list(QWEN))
def qwen(request, tmp_path_factory):
    writer, options, class_name, seam_class, size = QWEN[request.param]
    root = tmp_path_factory.mktemp(f"gpu_{request.param}")
    path = writer(root / "ckpt", **options)
    processor = transformers.AutoProcessor.from_pretrained(path)
    frames = load_video(write_synthetic_video(root / "v.mp4", frames=32, seed=4, size=size), max_frames=8).frames
    return request.param, path, getattr(transformers, class_name), seam_class, processor, frames


def _qwen_run(model_class, path, seam_class, inputs, spec, device: str, attn: str = "sdpa", dtype=torch.float32):
    model = model_class.from_pretrained(path, attn_implementation=attn, dtype=dtype).to(device).eval()
    seam = seam_class(model)
    seam.set_compression(spec)
    prepared = seam.prepare(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})
    forward = {k: prepared[k] for k in ("input_ids", "inputs_embeds", "attention_mask", "position_ids",
                                        "mm_encoder_outputs") if k in prepared}
    with torch.no_grad():
        logits = model(**forward).logits[0, -1]
    return prepared, logits


def _visual_tokens(prepared) -> torch.Tensor:
    """The visual part of a prepared prompt: Qwen2.5-VL's spliced embeddings, Qwen3-VL's encoder output."""
    if "inputs_embeds" in prepared:
        return prepared["inputs_embeds"]
    return torch.cat(list(prepared["mm_encoder_outputs"]["video"].pooler_output))


@pytest.mark.parametrize("spec", SPECS)
def test_qwen_seam_on_the_device_equals_the_cpu(qwen, spec):
    family, path, model_class, seam_class, processor, frames = qwen
    inputs = _qwen_inputs(processor, frames, family)
    want, want_logits = _qwen_run(model_class, path, seam_class, inputs, spec, "cpu")
    got, got_logits = _qwen_run(model_class, path, seam_class, inputs, spec, DEVICE)
    for name in ("input_ids", "position_ids", "attention_mask"):
        if name in want:
            assert torch.equal(got[name].cpu(), want[name]), f"{family}: {name}"
    assert rel_err(_visual_tokens(got), _visual_tokens(want)) <= F32_TOL
    assert rel_err(got_logits, want_logits) <= F32_TOL


# ------------------------------------------------------------------------------------- flash-attention-2


@pytest.fixture(scope="module")
def flash():
    pytest.importorskip("flash_attn", reason="flash-attention-2 needs the flash_attn package")


def test_llava_flash_attention_with_score_capture(flash, llava_ckpt, video):
    """The LLM on flash-attention-2 and the tower's stock layers on it too (the tower is built with sdpa):
    the scores captured on the side, the features and the last logits equal the sdpa run's."""
    runs = {}
    for attn in ("flash_attention_2", "sdpa"):
        tokenizer, model, processor = _load_llava(llava_ckpt, DEVICE, dtype="bfloat16", attn=attn)
        assert model.config._attn_implementation == attn
        tower = model.get_vision_tower()
        tower.config._attn_implementation = attn
        pixels = processor.preprocess(load_video(video, max_frames=8).frames, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features, scores = tower.forward_with_scores(pixels.to(DEVICE, torch.bfloat16), score_layers=(5, -2))
        _, logits = _llava_run(model, tokenizer, pixels, None)
        tokens, _ = _llava_run(model, tokenizer, pixels, "aot@0.25")  # compression reads the captured scores
        runs[attn] = features, scores, logits, tokens
    (features, scores, logits, tokens), (sdpa_features, sdpa_scores, sdpa_logits, sdpa_tokens) = runs.values()
    assert rel_err(features, sdpa_features) <= FLASH_TOL
    for got, want in zip(scores, sdpa_scores, strict=True):
        assert got.dtype == torch.float32 and rel_err(got, want) <= FLASH_TOL
    assert rel_err(logits, sdpa_logits) <= FLASH_TOL
    assert tokens.shape == sdpa_tokens.shape and torch.isfinite(tokens.float()).all()


def test_qwen_flash_attention_scores_equal_sdpa(flash, qwen):
    family, path, model_class, seam_class, processor, frames = qwen
    inputs = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in _qwen_inputs(processor, frames, family).items()}
    captured = {}
    for attn in ("flash_attention_2", "sdpa"):
        model = model_class.from_pretrained(path, attn_implementation=attn, dtype=torch.bfloat16).to(DEVICE).eval()
        layers = seam_class(model).score_layers
        with torch.no_grad():
            captured[attn] = video_features_with_scores(model.model.visual, inputs["pixel_values_videos"].bfloat16(),
                                                        inputs["video_grid_thw"], layers)
    (flash_features, flash_scores), (sdpa_features, sdpa_scores) = captured["flash_attention_2"], captured["sdpa"]
    assert rel_err(flash_features, sdpa_features) <= FLASH_TOL
    for got, want in zip(flash_scores, sdpa_scores, strict=True):
        assert got.dtype == torch.float32 and rel_err(got, want) <= FLASH_TOL

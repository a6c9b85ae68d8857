"""Tiny LLaVA-NeXT checkpoints in the exact on-disk layout of the real ones, for tests and the demo.

The tensor names are written from the layout description (LLaVA-NeXT's original names), not from
this package's modules, so loading such a folder checks that the model stack reads real checkpoints.
Geometry: a real 27x27 vision grid (patch 2, 54 px images), tiny widths, random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from llava.tiny_tokenizer import build_tiny_tokenizer

PINPOINTS = [[384 * w, 384 * h] for w in range(1, 7) for h in range(1, 7)]  # 36 pairs up to 2304


def tiny_config(vocab_size: int, *, newline_position: str = "one_token", pool_mode: str = "bilinear",
                hidden: int = 64, layers: int = 2, vision_hidden: int = 32, vision_layers: int = 8) -> dict:
    """config.json of a tiny LLaVA-OneVision (``one_token``/bilinear) or LLaVA-Video (``grid``)."""
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": vision_hidden,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_newline_position": newline_position,
        "mm_spatial_pool_mode": pool_mode,
        "mm_spatial_pool_stride": 2,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": PINPOINTS,
        "add_faster_video": False,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "vision_config": {
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "image_size": 54,
            "patch_size": 2,
            "num_channels": 3,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
    }


def tiny_state_dict(cfg: dict, *, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """Random weights under LLaVA-NeXT's key names for the geometry in ``cfg``."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    d, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head = d // cfg["num_attention_heads"]
    kv = head * cfg["num_key_value_heads"]
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": rnd(v, d), "model.norm.weight": torch.ones(d),
                                   "lm_head.weight": rnd(v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd |= {p + "self_attn.q_proj.weight": rnd(d, d), p + "self_attn.q_proj.bias": rnd(d),
               p + "self_attn.k_proj.weight": rnd(kv, d), p + "self_attn.k_proj.bias": rnd(kv),
               p + "self_attn.v_proj.weight": rnd(kv, d), p + "self_attn.v_proj.bias": rnd(kv),
               p + "self_attn.o_proj.weight": rnd(d, d), p + "mlp.gate_proj.weight": rnd(ff, d),
               p + "mlp.up_proj.weight": rnd(ff, d), p + "mlp.down_proj.weight": rnd(d, ff),
               p + "input_layernorm.weight": torch.ones(d), p + "post_attention_layernorm.weight": torch.ones(d)}
    vc = cfg["vision_config"]
    c, vff, patch = vc["hidden_size"], vc["intermediate_size"], vc["patch_size"]
    n = (vc["image_size"] // patch) ** 2
    vp = "model.vision_tower.vision_tower.vision_model."
    sd |= {vp + "embeddings.patch_embedding.weight": rnd(c, vc["num_channels"], patch, patch) * 4,
           vp + "embeddings.patch_embedding.bias": rnd(c), vp + "embeddings.position_embedding.weight": rnd(n, c),
           vp + "post_layernorm.weight": torch.ones(c), vp + "post_layernorm.bias": torch.zeros(c)}
    for i in range(vc["num_hidden_layers"]):
        p = f"{vp}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd |= {p + f"self_attn.{proj}.weight": rnd(c, c) * 4, p + f"self_attn.{proj}.bias": rnd(c)}
        sd |= {p + "layer_norm1.weight": torch.ones(c), p + "layer_norm1.bias": torch.zeros(c),
               p + "layer_norm2.weight": torch.ones(c), p + "layer_norm2.bias": torch.zeros(c),
               p + "mlp.fc1.weight": rnd(vff, c), p + "mlp.fc1.bias": rnd(vff),
               p + "mlp.fc2.weight": rnd(c, vff), p + "mlp.fc2.bias": rnd(c)}
    sd |= {"model.mm_projector.0.weight": rnd(d, c) * 4, "model.mm_projector.0.bias": rnd(d),
           "model.mm_projector.2.weight": rnd(d, d) * 4, "model.mm_projector.2.bias": rnd(d),
           "model.image_newline": rnd(d) * 10}
    return sd


def write_tiny_checkpoint(path: str | Path, *, newline_position: str = "one_token", pool_mode: str = "bilinear",
                          seed: int = 0, shards: int = 2, **geometry) -> Path:
    """Write config.json, tokenizer files and sharded safetensors (with the index) to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(path)
    cfg = tiny_config(len(tokenizer), newline_position=newline_position, pool_mode=pool_mode, **geometry)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>")}))
    sd = tiny_state_dict(cfg, seed=seed)
    keys = sorted(sd)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        part = {k: sd[k].contiguous() for k in keys[s::shards]}
        save_file(part, str(path / name), metadata={"format": "pt"})
        weight_map |= {k: name for k in part}
    if shards > 1:
        total = sum(t.numel() * t.element_size() for t in sd.values())
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    return path

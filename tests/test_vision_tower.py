"""SigLIP tower: scores equal eager attention's column sums, features equal LLaVA-NeXT's, checkpoint key layout.

A tiny tower (width 32, 4 heads, 6 layers) on the real 27 × 27 grid: 54 px images, patch 2, N = 729.
"""

from __future__ import annotations

import pytest
import torch
from transformers import SiglipVisionConfig

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_encoder.siglip_encoder import SigLipVisionTower, so400m_vision_config

TINY = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
    "image_size": 54, "patch_size": 2,
}
N = 27 * 27
SCORE_LAYERS = (5, -2)


@pytest.fixture(scope="module")
def towers() -> tuple[SigLipVisionTower, SigLipVisionTower]:
    """(SDPA tower, eager tower) with the same seeded random weights."""
    torch.manual_seed(0)
    sdpa = SigLipVisionTower(TINY)
    eager = SigLipVisionTower(TINY, attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    return sdpa, eager


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(3, 3, 54, 54) pixels in [-1, 1]."""
    return torch.rand(3, 3, 54, 54, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def eager_reference(towers, images):
    """The eager tower's per-layer attention maps (B, h, N, N) and hidden states (transformers' own outputs)."""
    _, eager = towers
    with torch.no_grad():
        out = eager.vision_model(images, output_attentions=True, output_hidden_states=True)
    return out


def column_sums(attention: torch.Tensor) -> torch.Tensor:
    """mean_h Σ_i A[:, h, i, :]: (B, h, N, N) → (B, N)."""
    return attention.sum(dim=2).mean(dim=1)


def test_scores_equal_eager_column_sums(towers, images, eager_reference):
    sdpa, _ = towers
    assert len(eager_reference.attentions) == 6
    with torch.no_grad():
        _, scores = sdpa.forward_with_scores(images, score_layers=SCORE_LAYERS)
    assert len(scores) == 2
    for layer, s in zip(SCORE_LAYERS, scores):
        ref = column_sums(eager_reference.attentions[layer])
        assert s.shape == (3, N) and s.dtype == torch.float32
        torch.testing.assert_close(s, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.sum(dim=1), torch.full((3,), float(N)), atol=1e-2, rtol=0)
        assert s.std() > 0.1  # the random weights give non-uniform attention: the test can tell layers apart
    assert not torch.allclose(scores[0], scores[1], atol=1e-3)


def test_features_equal_eager_last_hidden_state_before_post_layernorm(towers, images, eager_reference):
    sdpa, eager = towers
    with torch.no_grad():
        features, _ = sdpa.forward_with_scores(images, score_layers=SCORE_LAYERS)
        plain = sdpa(images)
        eager_plain = eager(images)
    ref = eager_reference.hidden_states[-1]
    assert features.shape == (3, N, 32)
    torch.testing.assert_close(features, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager_plain, ref, atol=1e-5, rtol=1e-5)
    post = eager.vision_model.post_layernorm(ref)
    torch.testing.assert_close(post, eager_reference.last_hidden_state)
    assert not torch.allclose(features, post, atol=1e-2)


@pytest.mark.parametrize("chunk", [1, 7, 729, 10_000])
def test_chunk_size_does_not_change_results(towers, images, chunk):
    sdpa, _ = towers
    with torch.no_grad():
        ref_features, ref_scores = sdpa.forward_with_scores(images)
        sdpa.score_chunk_size = chunk
        try:
            features, scores = sdpa.forward_with_scores(images)
        finally:
            sdpa.score_chunk_size = 256
    torch.testing.assert_close(features, ref_features, atol=1e-5, rtol=1e-5)
    for s, ref in zip(scores, ref_scores):
        torch.testing.assert_close(s, ref, atol=1e-5, rtol=0)


def test_state_dict_keys_follow_the_checkpoint_layout(towers):
    sdpa, _ = towers
    keys = set(sdpa.state_dict())
    prefix = "vision_tower.vision_model."
    assert all(k.startswith(prefix) for k in keys)
    assert f"{prefix}embeddings.patch_embedding.weight" in keys
    assert f"{prefix}embeddings.position_embedding.weight" in keys
    assert f"{prefix}post_layernorm.weight" in keys and f"{prefix}post_layernorm.bias" in keys
    layer_ids = {int(k.split(".")[4]) for k in keys if k.startswith(f"{prefix}encoder.layers.")}
    assert layer_ids == set(range(6))
    assert f"{prefix}encoder.layers.5.self_attn.q_proj.weight" in keys
    assert not any(".head." in k for k in keys)
    assert sdpa.state_dict()[f"{prefix}embeddings.position_embedding.weight"].shape == (N, 32)

    parent = torch.nn.Module()
    parent.vision_tower = sdpa
    assert "vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight" in parent.state_dict()


def test_geometry_and_attention_implementation(towers):
    sdpa, eager = towers
    assert (sdpa.hidden_size, sdpa.image_size, sdpa.patch_size) == (32, 54, 2)
    assert (sdpa.num_patches_per_side, sdpa.num_patches, sdpa.num_layers) == (27, N, 6)
    assert sdpa.dtype == torch.float32 and sdpa.device == torch.device("cpu")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    assert not sdpa.training
    assert sdpa.resolve_score_layers((5, -2, 0, -6)) == (5, 4, 0, 0)

    caller_config = so400m_vision_config(**TINY)
    tower = SigLipVisionTower(caller_config, attn_implementation="eager")
    assert tower.config is not caller_config and caller_config._attn_implementation is None
    assert tower.config._attn_implementation == "eager"


def test_so400m_config():
    cfg = so400m_vision_config()
    assert isinstance(cfg, SiglipVisionConfig)
    sizes = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers)
    assert sizes == (1152, 4304, 16, 26)
    assert (cfg.image_size, cfg.patch_size, cfg.hidden_act, cfg.layer_norm_eps) == (384, 14, "gelu_pytorch_tanh", 1e-6)
    assert cfg.vision_use_head is False
    assert so400m_vision_config(num_hidden_layers=3).num_hidden_layers == 3
    with torch.device("meta"):  # full size without allocating it
        tower = SigLipVisionTower()
    assert (tower.num_layers, tower.num_patches_per_side, tower.num_patches, tower.hidden_size) == (26, 27, 729, 1152)
    assert "vision_tower.vision_model.encoder.layers.25.mlp.fc2.bias" in tower.state_dict()


@pytest.mark.parametrize(
    "score_layers", [(6,), (-7,), (5, 100), 5, "5", (1.0,), (True,)], ids=repr,
)
def test_bad_score_layers_raise(towers, images, score_layers):
    sdpa, _ = towers
    with pytest.raises(ValueError, match="score_layers"):
        sdpa.forward_with_scores(images, score_layers=score_layers)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3, 54, 54), torch.zeros(1, 1, 54, 54), torch.zeros(2, 3, 56, 56), torch.zeros(0, 3, 54, 54),
        [], [torch.zeros(3, 54, 54), torch.zeros(3, 50, 54)], [torch.zeros(2, 3, 54, 54)], "pixels",
        [torch.zeros(3, 54, 54), "frame"],
    ],
    ids=lambda b: type(b).__name__ + (str(tuple(b.shape)) if isinstance(b, torch.Tensor) else f"[{len(b)}]"),
)
def test_bad_inputs_raise(towers, bad):
    sdpa, _ = towers
    with pytest.raises(ValueError, match="images"):
        sdpa(bad)
    with pytest.raises(ValueError, match="images"):
        sdpa.forward_with_scores(bad)


def test_bad_chunk_size_raises():
    with pytest.raises(ValueError, match="score_chunk_size"):
        SigLipVisionTower(TINY, score_chunk_size=0)


def test_bf16(towers, images):
    sdpa, _ = towers
    with torch.no_grad():
        _, ref_scores = sdpa.forward_with_scores(images)
        features, scores = sdpa.forward_with_scores(images.bfloat16())  # bf16 input, float32 tower
        assert features.dtype == torch.float32
        tower16 = SigLipVisionTower(TINY)
        tower16.load_state_dict(sdpa.state_dict())
        tower16.to(torch.bfloat16)
        features16, scores16 = tower16.forward_with_scores(images)  # float32 input, bf16 tower
    assert features16.dtype == torch.bfloat16 and tower16.dtype == torch.bfloat16
    for s, s16, ref in zip(scores, scores16, ref_scores):
        assert s.dtype == s16.dtype == torch.float32
        assert torch.isfinite(s).all() and torch.isfinite(s16).all()
        torch.testing.assert_close(s16, ref, atol=0.05, rtol=0.05)
    assert torch.isfinite(features16.float()).all()


def test_list_input_returns_a_list(towers, images):
    sdpa, _ = towers
    batch = [images[0], images[1:2], images[2]]  # (3, S, S) and (1, 3, S, S) both accepted
    with torch.no_grad():
        out = sdpa(batch)
        ref = sdpa(images)
        features, scores = sdpa.forward_with_scores(batch)
    assert isinstance(out, list) and len(out) == 3
    for i, f in enumerate(out):
        assert f.shape == (1, N, 32)
        torch.testing.assert_close(f[0], ref[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features, ref, atol=1e-5, rtol=1e-5)
    assert [s.shape for s in scores] == [(3, N), (3, N)]


def test_gradients_flow_through_score_layers(towers, images):
    sdpa, _ = towers
    x = images[:1].clone().requires_grad_(True)
    features, scores = sdpa.forward_with_scores(x)
    features.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(s.requires_grad for s in scores)
    q = sdpa.vision_model.encoder.layers[5].self_attn.q_proj.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    sdpa.zero_grad(set_to_none=True)


def test_builder():
    tower = build_vision_tower(
        type("Cfg", (), {"mm_vision_tower": "google/siglip-so400m-patch14-384", "vision_config": TINY})(),
        attn_implementation="eager", score_chunk_size=64,
    )
    assert isinstance(tower, SigLipVisionTower)
    assert (tower.num_layers, tower.num_patches, tower.score_chunk_size) == (6, N, 64)
    assert tower.config._attn_implementation == "eager"
    tower = build_vision_tower({"mm_vision_tower": "/ckpt/siglip-base-patch16-224", "vision_config": TINY})
    assert tower.hidden_size == 32
    with torch.device("meta"):
        tower = build_vision_tower({"mm_vision_tower": "google/siglip-so400m-patch14-384"})
    assert (tower.num_layers, tower.hidden_size, tower.num_patches) == (26, 1152, 729)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"mm_vision_tower": "openai/clip-vit-large-patch14-336"}, "openai/clip-vit-large-patch14-336"),
        ({}, "mm_vision_tower"),
        ({"mm_vision_tower": "google/siglip-base-patch16-224"}, "google/siglip-base-patch16-224"),
        ({"mm_vision_tower": "google/siglip-so400m-patch14-384", "vision_config": 3}, "vision_config"),
    ],
)
def test_builder_rejects(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_vision_tower(cfg)

"""SigLIP vision tower of LLaVA-NeXT, with AOT's attention scores captured on the way (docs/algorithm.md §0).

LLaVA-NeXT checkpoints keep 26 of SigLIP so400m-patch14-384's 27 encoder layers and use the output of
the last kept layer, *before* ``post_layernorm``, as the image features: (B, 729, 1152) for 384 px
frames. :class:`SigLipVisionTower` wraps a transformers ``SiglipVisionModel`` so that its state-dict
keys read ``vision_tower.vision_model.…``; held by the LLaVA model as ``model.vision_tower`` they are
exactly the checkpoint's ``model.vision_tower.vision_tower.vision_model.…``.

:meth:`SigLipVisionTower.forward_with_scores` also returns, for a few requested layers, the attention
each token *receives*, ``s[b, j] = mean_h Σ_i A[b, h, i, j]`` (float32, (B, N) per layer). Every
layer runs through the stock transformers layer (SDPA or flash-attention), so the features are those
of :meth:`SigLipVisionTower.forward` bit for bit; in a score layer the attention probabilities are
computed again on the side with the softmax taken in query chunks, so memory stays
O(B × heads × chunk × N) and no full (B, heads, N, N) map is ever held.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipEncoderLayer

__all__ = ["SigLipVisionTower", "so400m_vision_config"]

ImageInput = torch.Tensor | Sequence[torch.Tensor]


def so400m_vision_config(**overrides: Any) -> SiglipVisionConfig:
    """SigLIP so400m-patch14-384 geometry as LLaVA-NeXT keeps it: 26 of the 27 layers, no pooling head.

    hidden 1152, FFN 4304, 16 heads, 26 layers, 384 px, patch 14 (27 × 27 = 729 tokens),
    ``gelu_pytorch_tanh``, LayerNorm eps 1e-6. ``overrides`` replace any of these fields.
    """
    fields: dict[str, Any] = {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 26,
        "num_attention_heads": 16,
        "num_channels": 3,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "vision_use_head": False,
    }
    fields.update(overrides)
    return SiglipVisionConfig(**fields)


def tower_config(vision_config: SiglipVisionConfig | dict[str, Any] | None) -> SiglipVisionConfig:
    """The tower's geometry: so400m-patch14-384 (:func:`so400m_vision_config`) for None, with a dict's
    fields over it, or a copy of the ``SiglipVisionConfig`` given."""
    if vision_config is None:
        return so400m_vision_config()
    if isinstance(vision_config, SiglipVisionConfig):
        return copy.deepcopy(vision_config)
    if isinstance(vision_config, dict):
        return so400m_vision_config(**vision_config)
    raise ValueError(
        f"vision_config must be a SiglipVisionConfig, a dict or None, got {type(vision_config).__name__}"
    )


class SiglipVisionHolder(nn.Module):
    """The level LLaVA-NeXT's own ``SigLipVisionModel`` adds: holds ``vision_model`` (a transformers 5
    ``SiglipVisionModel`` with ``embeddings``, ``encoder``, ``post_layernorm`` at its top level)."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.vision_model = SiglipVisionModel(config)


class SigLipVisionTower(nn.Module):
    """LLaVA-NeXT's SigLIP tower: pixels (B, 3, S, S) → features (B, N, C) of the last stored layer.

    Args:
        vision_config: a ``SiglipVisionConfig``, a dict of its fields (missing fields take the
            so400m values; ``num_hidden_layers`` is the number of layers stored), or ``None`` for
            :func:`so400m_vision_config`. It is copied; the pooling head is never built
            (``vision_use_head=False``), as LLaVA-NeXT replaces it with an identity.
        attn_implementation: transformers attention backend of the stock layers (``"sdpa"``,
            ``"eager"``, ``"flash_attention_2"``, …); set on this instance's config and validated by
            transformers when the model is built.
        score_chunk_size: query rows per softmax chunk in a score layer.

    The weights are randomly initialised; the LLaVA checkpoint's weights are loaded later through the
    parent model's state dict. The tower starts in eval mode.
    """

    def __init__(
        self,
        vision_config: SiglipVisionConfig | dict[str, Any] | None = None,
        *,
        attn_implementation: str = "sdpa",
        score_chunk_size: int = 256,
    ) -> None:
        super().__init__()
        config = tower_config(vision_config)
        config.vision_use_head = False
        config._attn_implementation = attn_implementation
        self.score_chunk_size = score_chunk_size
        self.vision_tower = SiglipVisionHolder(config)
        self.eval()

    # ----------------------------------------------------------------------------------------------
    # Properties

    @property
    def vision_model(self) -> SiglipVisionModel:
        """The wrapped transformers ``SiglipVisionModel``."""
        return self.vision_tower.vision_model

    @property
    def config(self) -> SiglipVisionConfig:
        """This instance's SigLIP config (``config._attn_implementation`` is the stock layers' backend)."""
        return self.vision_model.config

    @property
    def hidden_size(self) -> int:
        """Feature width C (1152 for so400m)."""
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        """Input side S in pixels (384 for so400m)."""
        return self.config.image_size

    @property
    def patch_size(self) -> int:
        """Patch side in pixels (14 for so400m)."""
        return self.config.patch_size

    @property
    def num_patches_per_side(self) -> int:
        """Grid side S // patch (27 for so400m)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Tokens per image N (729 for so400m)."""
        return self.num_patches_per_side**2

    @property
    def num_layers(self) -> int:
        """Encoder layers stored (26 for LLaVA's so400m)."""
        return len(self.vision_model.encoder.layers)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype; inputs are cast to it."""
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        """Parameter device; inputs are moved to it."""
        return self.vision_model.embeddings.patch_embedding.weight.device

    @property
    def score_chunk_size(self) -> int:
        """Query rows per softmax chunk in a score layer (a positive int)."""
        return self._score_chunk_size

    @score_chunk_size.setter
    def score_chunk_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"score_chunk_size must be a positive integer, got {value!r}")
        self._score_chunk_size = int(value)

    # ----------------------------------------------------------------------------------------------
    # Forward

    def forward(self, images: ImageInput) -> torch.Tensor | list[torch.Tensor]:
        """Features of the last stored layer, before ``post_layernorm`` (LLaVA-NeXT's ``hidden_states[-1]``).

        Args:
            images: a tensor (B, 3, S, S), or a list of (3, S, S) / (1, 3, S, S) tensors.
        Returns:
            (B, N, C) in the tower's dtype for a tensor; for a list, a list of (1, N, C) tensors, one
            per image, as LLaVA-NeXT's tower returns (the images run as one batch).
        """
        pixel_values, is_list = self._prepare(images)
        features, _ = self._encode(pixel_values, frozenset())
        return list(features.split(1)) if is_list else features

    def forward_with_scores(
        self, images: ImageInput, *, score_layers: Sequence[int] = (5, -2)
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Features plus the attention each token receives in the requested layers (docs/algorithm.md §0).

        Args:
            images: a tensor (B, 3, S, S), or a list of (3, S, S) / (1, 3, S, S) tensors (stacked
                into one batch in list order).
            score_layers: encoder layer indices, 0-based; negative ones count from the stored
                layers (-2 is layer 24 of 26).
        Returns:
            ``(features, scores)``: features (B, N, C) in the tower's dtype, exactly those of
            :meth:`forward` (every layer runs as stock; the scores are computed on the side);
            ``scores`` one float32 (B, N) tensor per entry of ``score_layers``,
            ``scores[b, j] = mean_h Σ_i softmax(q_i · k_j / sqrt(d))[b, h, i, j]`` (each frame's
            scores sum to N). Scores carry no gradient.
        """
        layers = self.resolve_score_layers(score_layers)
        pixel_values, _ = self._prepare(images)
        features, scores = self._encode(pixel_values, frozenset(layers))
        return features, tuple(scores[layer] for layer in layers)

    def resolve_score_layers(self, score_layers: Sequence[int]) -> tuple[int, ...]:
        """Non-negative layer indices, in the order given; ValueError naming ``score_layers`` otherwise."""
        n = self.num_layers
        if isinstance(score_layers, (str, bytes)) or not isinstance(score_layers, Sequence):
            raise ValueError(f"score_layers must be a sequence of layer indices, got {score_layers!r}")
        resolved = []
        for layer in score_layers:
            if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                raise ValueError(f"score_layers must hold integers, got {layer!r} in {score_layers!r}")
            if not -n <= layer < n:
                raise ValueError(
                    f"score_layers={tuple(score_layers)!r}: layer {layer} is out of range for a tower with "
                    f"{n} layers (valid: {-n} … {n - 1})"
                )
            resolved.append(int(layer) % n)
        return tuple(resolved)

    # ----------------------------------------------------------------------------------------------
    # Internals

    def _prepare(self, images: ImageInput) -> tuple[torch.Tensor, bool]:
        """Validate and batch the input: (pixel values (B, 3, S, S) on the tower's device and dtype,
        whether it came as a list)."""
        expected = (self.config.num_channels, self.image_size, self.image_size)
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
                raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}) with B >= 1, "
                                 f"got {tuple(images.shape)}")
            return images.to(device=self.device, dtype=self.dtype), False
        if not isinstance(images, Sequence) or isinstance(images, (str, bytes)) or len(images) == 0:
            raise ValueError(f"images must be a tensor or a non-empty list of tensors, got {type(images).__name__}")
        frames = []
        for i, image in enumerate(images):
            if not isinstance(image, torch.Tensor):
                raise ValueError(f"images[{i}] must be a tensor, got {type(image).__name__}")
            if image.dim() == 4 and image.shape[0] == 1:
                image = image[0]
            if tuple(image.shape) != expected:
                raise ValueError(f"images[{i}] must have shape {expected} or (1, {', '.join(map(str, expected))}), "
                                 f"got {tuple(image.shape)}")
            frames.append(image.to(device=self.device, dtype=self.dtype))
        return torch.stack(frames), True

    def _encode(
        self, pixel_values: torch.Tensor, score_layers: frozenset[int]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Embeddings → every stored layer in turn. pixel_values (B, 3, S, S) → (features (B, N, C),
        {layer: float32 scores (B, N)} for the layers in ``score_layers``)."""
        hidden = self.vision_model.embeddings(pixel_values)  # (B, N, C)
        scores: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.vision_model.encoder.layers):
            if index in score_layers:
                hidden, scores[index] = self._layer_with_scores(layer, hidden)
            else:
                hidden = layer(hidden, None)
        return hidden, scores

    def _layer_with_scores(self, layer: SiglipEncoderLayer, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stock ``SiglipEncoderLayer`` (so the features are exactly those of :meth:`forward`)
        plus the attention each token receives in it, computed on the side.

        hidden (B, N, C) → (layer output (B, N, C), float32 scores (B, N)).
        """
        with torch.no_grad():
            scores = self._received_attention(layer.self_attn, layer.layer_norm1(hidden))
        return layer(hidden, None), scores

    def _received_attention(self, attn: SiglipAttention, normed: torch.Tensor) -> torch.Tensor:
        """Attention each token receives in ``attn``, with eager softmax in query chunks.

        normed (B, N, C) → float32 scores (B, N). Per chunk of ``c`` queries: logits (B, h, c, N) in
        the tower's dtype, float32 softmax (as transformers' eager attention), its column sums added
        to a float32 (B, h, N) buffer; never an (N, N) map per head for the whole frame.
        """
        batch, tokens, _ = normed.shape
        heads_shape = (batch, tokens, attn.num_heads, attn.head_dim)
        queries = attn.q_proj(normed).view(heads_shape).transpose(1, 2)  # (B, h, N, d)
        keys_t = attn.k_proj(normed).view(heads_shape).permute(0, 2, 3, 1).contiguous()  # (B, h, d, N)
        received = torch.zeros(batch, attn.num_heads, tokens, dtype=torch.float32, device=normed.device)
        for start in range(0, tokens, self.score_chunk_size):
            stop = min(start + self.score_chunk_size, tokens)
            logits = torch.matmul(queries[:, :, start:stop], keys_t)  # (B, h, c, N)
            logits.mul_(attn.scale)
            received += torch.softmax(logits, dim=-1, dtype=torch.float32).sum(dim=2)
            del logits
        return received.mean(dim=1)

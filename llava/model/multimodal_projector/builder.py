"""The multimodal projector (vision width -> LLM width), as LLaVA-NeXT builds it."""

from __future__ import annotations

import re

import torch.nn as nn


class IdentityMap(nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


def build_vision_projector(config) -> nn.Module:
    """``mm_projector_type``: ``linear``, ``mlp{N}x_gelu`` (exact-erf GELU between N linears) or
    ``identity``. Keys match the checkpoints: ``mm_projector.0.weight``, ``mm_projector.2.weight``..."""
    kind = getattr(config, "mm_projector_type", "linear")
    vision, text = config.mm_hidden_size, config.hidden_size
    if kind == "linear":
        return nn.Linear(vision, text)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match:
        layers: list[nn.Module] = [nn.Linear(vision, text)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(text, text)]
        return nn.Sequential(*layers)
    if kind == "identity":
        return IdentityMap()
    raise ValueError(f"mm_projector_type={kind!r} is not supported; expected 'linear', 'mlp<N>x_gelu' or 'identity'")

"""Build the vision tower a LLaVA config names (construction only; weights come from the checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import SiglipVisionConfig

from .siglip_encoder import SigLipVisionTower, tower_config

__all__ = ["build_vision_tower", "vision_grid_side"]

SO400M_384_ID = "siglip-so400m-patch14-384"  # the geometry so400m_vision_config() describes


def _field(model_config: Any, name: str) -> Any:
    """``model_config.name`` for a config object, ``model_config[name]`` for a mapping; None if absent."""
    if isinstance(model_config, Mapping):
        return model_config.get(name)
    return getattr(model_config, name, None)


def build_vision_tower(model_config: Any, **kwargs: Any) -> SigLipVisionTower:
    """A randomly initialised :class:`SigLipVisionTower` for a LLaVA model config.

    Args:
        model_config: an object (or mapping) with ``mm_vision_tower``, a SigLIP hub id or path such as
            ``"google/siglip-so400m-patch14-384"``, and optionally ``vision_config`` (a dict of
            ``SiglipVisionConfig`` fields, or the config itself) giving the tower's geometry. Without
            ``vision_config`` the id must name so400m-patch14-384, whose LLaVA geometry (26 layers)
            is known; nothing is downloaded.
        **kwargs: passed to :class:`SigLipVisionTower` (``attn_implementation``, ``score_chunk_size``).
    Raises:
        ValueError: ``mm_vision_tower`` is missing, not a SigLIP id, or a SigLIP id other than
            so400m-patch14-384 without a ``vision_config``.
    """
    name = _field(model_config, "mm_vision_tower")
    if not isinstance(name, str) or not name:
        raise ValueError(f"model config has no mm_vision_tower (a SigLIP hub id); got {name!r}")
    if "siglip" not in name.lower():
        raise ValueError(
            f"unsupported vision tower {name!r}: only SigLIP towers (e.g. 'google/{SO400M_384_ID}') are supported"
        )
    vision_config = _field(model_config, "vision_config")
    if vision_config is None and SO400M_384_ID not in name.lower():
        raise ValueError(
            f"vision tower {name!r}: its geometry is unknown without a download; give the model config a "
            f"vision_config (SiglipVisionConfig fields), or use google/{SO400M_384_ID}"
        )
    if vision_config is not None and not isinstance(vision_config, (dict, SiglipVisionConfig)):
        raise ValueError(
            f"vision_config must be a dict or a SiglipVisionConfig, got {type(vision_config).__name__}"
        )
    return SigLipVisionTower(vision_config, **kwargs)


def vision_grid_side(model_config: Any) -> int:
    """Patches per side of the tower :func:`build_vision_tower` builds for ``model_config``, from the config
    alone (``image_size // patch_size`` of its ``vision_config``, so400m-patch14-384's 27 without one)."""
    config = tower_config(_field(model_config, "vision_config"))
    return int(config.image_size) // int(config.patch_size)

"""LLaVA-NeXT's ``mm_*`` layout keys, with their defaults and their checks, for the model config classes.

:class:`MultimodalConfigMixin` sits in front of a transformers config class (``LlavaQwenConfig``,
``LlavaConfig``). Each key below has its default here and nowhere else: a checkpoint whose
``config.json`` leaves a key out (or sets it to null) reads the default, which is what LLaVA-NeXT does
with such a checkpoint. Every assignment is checked, from ``config.json`` as from ``overwrite_config``
or ``config.x = ...`` later, and a bad value raises a ``ValueError`` naming the key, the value and the
choices.

==========================  ==============  ====================================================
key                         default         choices
==========================  ==============  ====================================================
``mm_patch_merge_type``     ``"flat"``      :data:`PATCH_MERGE_TYPES` (``unpad``: a learned newline)
``mm_spatial_pool_mode``    ``"bilinear"``  ``"bilinear"``, ``"average"``, ``"max"``
``mm_spatial_pool_stride``  ``2``           an integer >= 1
``mm_newline_position``     ``"one_token"`` ``"grid"``, ``"frame"``, ``"one_token"``, ``"no_token"``
==========================  ==============  ====================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["MM_DEFAULTS", "MultimodalConfigMixin", "PATCH_MERGE_TYPES", "check_mm_value"]

#: the image merges :meth:`llava.model.llava_arch.LlavaMetaForCausalLM.encode_multimodal` implements
PATCH_MERGE_TYPES = ("flat", "spatial", "spatial_unpad", "spatial_nobase", "spatial_unpad_nobase")

_CHOICES: dict[str, tuple[str, ...]] = {
    "mm_patch_merge_type": PATCH_MERGE_TYPES,
    "mm_spatial_pool_mode": ("bilinear", "average", "max"),
    "mm_newline_position": ("grid", "frame", "one_token", "no_token"),
}

#: the default of every checked key
MM_DEFAULTS: dict[str, Any] = {
    "mm_patch_merge_type": "flat",
    "mm_spatial_pool_mode": "bilinear",
    "mm_spatial_pool_stride": 2,
    "mm_newline_position": "one_token",
}


def check_mm_value(key: str, value: Any) -> Any:
    """``value`` for ``key`` as the config keeps it (None: the default), or a ValueError."""
    if value is None:
        return MM_DEFAULTS[key]
    if key == "mm_spatial_pool_stride":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} is not valid; expected an integer >= 1")
        return value
    if value not in _CHOICES[key]:
        raise ValueError(f"{key}={value!r} is not valid; expected one of {', '.join(map(repr, _CHOICES[key]))}")
    return value


class MultimodalConfigMixin:
    """The ``mm_*`` layout keys of :data:`MM_DEFAULTS` as checked attributes of a transformers config.

    The defaults are class attributes: a config that was not given a key reads it and does not write it
    when saved. An assignment is checked by :func:`check_mm_value`."""

    mm_patch_merge_type = MM_DEFAULTS["mm_patch_merge_type"]
    mm_spatial_pool_mode = MM_DEFAULTS["mm_spatial_pool_mode"]
    mm_spatial_pool_stride = MM_DEFAULTS["mm_spatial_pool_stride"]
    mm_newline_position = MM_DEFAULTS["mm_newline_position"]

    def __setattr__(self, key: str, value: Any) -> None:
        if key in MM_DEFAULTS:
            value = check_mm_value(key, value)
        super().__setattr__(key, value)

"""The vLLM general plugin: vLLM calls :func:`register` in each of its processes at start-up.

It registers this project's subclasses under vLLM's own architecture names, by module path (nothing is
imported until vLLM builds a model). Each subclass defers to vLLM's own code unless the model's config
carries the ``aot`` key (``--hf-overrides '{"aot": "<spec>"}'``), so registering changes nothing else.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURES", "register"]

#: vLLM architecture name -> this project's subclass
ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "llava.serving.qwen2_5_vl:AOTQwen2_5_VLForConditionalGeneration",
}


def register() -> None:
    """Register the AOT-capable model classes with vLLM's ``ModelRegistry``."""
    from vllm import ModelRegistry

    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)

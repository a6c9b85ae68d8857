"""The ``lmms_eval.models`` entry point: lmms-eval calls :func:`manifests` and registers what it returns.

Declared in pyproject.toml::

    [project.entry-points."lmms_eval.models"]
    aot = "llava.eval.plugin:manifests"

The model classes (:mod:`llava.eval.adapters`, one module per model family) are imported by lmms-eval
only when a run asks for one of them.
"""

from __future__ import annotations

#: lmms-eval model name -> class path.
MODELS = {
    "aot_llava_onevision": "llava.eval.adapters.llava_onevision.AOTLlavaOneVision",
    "aot_llava_vid": "llava.eval.adapters.llava_video.AOTLlavaVid",
    "aot_qwen2_5_vl": "llava.eval.adapters.qwen2_5_vl.AOTQwen25VL",
    "aot_qwen3_vl": "llava.eval.adapters.qwen3_vl.AOTQwen3VL",
}

#: the chat models among them (``is_simple = False``: they take the task's ``doc_to_messages``), as the
#: lmms-eval built-ins they follow are
CHAT_MODELS = frozenset({"aot_qwen2_5_vl", "aot_qwen3_vl"})


def manifests() -> list:
    """One ``ModelManifest`` per plugin model: a simple model takes lmms-eval's ``doc_to_visual``, a
    chat model its ``doc_to_messages``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=name, chat_class_path=path) if name in CHAT_MODELS
        else ModelManifest(model_id=name, simple_class_path=path)
        for name, path in MODELS.items()
    ]

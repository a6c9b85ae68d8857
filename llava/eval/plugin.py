"""The ``lmms_eval.models`` entry point: lmms-eval calls :func:`manifests` and registers what it returns.

Declared in pyproject.toml::

    [project.entry-points."lmms_eval.models"]
    aot = "llava.eval.plugin:manifests"

One model per registered family (:mod:`llava.families`, entry-point families included), as its
:class:`~llava.families.PluginSpec` says. The model classes are imported by lmms-eval only when a run
asks for one of them.
"""

from __future__ import annotations

from typing import Any

from llava.families import plugin_models


def models() -> dict[str, str]:
    """lmms-eval model name -> class path, for every registered family."""
    return {model_id: spec.plugin.class_path for model_id, spec in plugin_models().items()}


def chat_models() -> frozenset[str]:
    """The chat models among them (``is_simple = False``: they take the task's ``doc_to_messages``), as
    the lmms-eval built-ins they follow are."""
    return frozenset(model_id for model_id, spec in plugin_models().items() if spec.plugin.chat)


def __getattr__(name: str) -> Any:
    """``MODELS`` and ``CHAT_MODELS``: :func:`models` and :func:`chat_models`, read when asked for."""
    if name == "MODELS":
        return models()
    if name == "CHAT_MODELS":
        return chat_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def manifests() -> list:
    """One ``ModelManifest`` per plugin model: a simple model takes lmms-eval's ``doc_to_visual``, a
    chat model its ``doc_to_messages``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    chat = chat_models()
    return [
        ModelManifest(model_id=name, chat_class_path=path) if name in chat
        else ModelManifest(model_id=name, simple_class_path=path)
        for name, path in models().items()
    ]

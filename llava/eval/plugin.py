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
}


def manifests() -> list:
    """One ``ModelManifest`` per plugin model (simple models: they take lmms-eval's ``doc_to_visual``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=path) for name, path in MODELS.items()]

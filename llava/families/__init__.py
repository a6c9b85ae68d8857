"""Model families: one :class:`FamilySpec` per family, in one registry that every entry point reads.

=================  ===========================  =====================  ==========================================
family             checkpoint ``model_type``    lmms-eval plugin       equals lmms-eval's built-in (compression=none)
=================  ===========================  =====================  ==========================================
llava_onevision    llava, llava_qwen            aot_llava_onevision    llava_onevision (simple)
llava_video        llava, llava_qwen (chosen)   aot_llava_vid          llava_vid (simple)
qwen2_5_vl         qwen2_5_vl                   aot_qwen2_5_vl         qwen2_5_vl (chat)
qwen3_vl           qwen3_vl, qwen3_vl_moe       aot_qwen3_vl           qwen3_vl (chat)
=================  ===========================  =====================  ==========================================

A spec holds the family's name, the ``model_type`` values it runs, its checkpoint layout, how it
loads and answers one question about one clip (``aot infer``), where its compression seam is, its
lmms-eval plugin model (:class:`PluginSpec`), its tiny random-weight checkpoint with the model
arguments ``aot sweep`` gives it (:class:`TinySpec`) and its default score layers. ``aot infer``,
``aot demo``, ``aot sweep``, ``aot viz``, the lmms-eval plugin registration
(:func:`llava.eval.plugin.manifests`), the paper tables (:mod:`llava.eval.tables`) and the
benchmarks read it; nothing else names a family.

``aot infer`` picks the family by the checkpoint's ``model_type`` among the families with
``auto_detect``; LLaVA-OneVision and LLaVA-Video share the original LLaVA-NeXT layout, so such a
checkpoint runs as LLaVA-OneVision unless ``--family llava_video`` is given (both answer through the
same loader and runner; their plugins differ). A ``model_type`` no family claims runs as
:data:`DEFAULT_FAMILY`, whose loader names what it cannot read. An unknown family name raises
``ValueError`` listing the registered ones.

Adding a model family is one module plus one entry point, with no edit here:

1. The lmms-eval adapter: subclass :class:`llava.eval.adapters.base.AOTModelAdapter` (or a family's
   adapter, e.g. :class:`llava.eval.adapters.llava_onevision.AOTLlavaOneVision`) with its own
   ``MODEL_ID`` (see :mod:`llava.eval.adapters` for what ``__init__``, ``_prepare`` and ``_generate`` do).
2. The ``aot infer`` runner: ``answer(model_path, clip, question, options) -> (answer, SampleRecord)``
   (:class:`~llava.families.infer.InferOptions`, :class:`~llava.model.record.SampleRecord`); the
   LLaVA-NeXT and Qwen-VL runners (:func:`llava.families.llava_next.answer_llava`,
   :func:`llava.families.qwen_vl.answer_qwen`) serve checkpoints of those layouts. Optionally its two
   halves, ``load(model_path, options)`` and ``answer_loaded(loaded, clip, question, options)``, so that
   a server (``aot demo --serve``) loads the checkpoint once; without them it loads one per request.
3. A tiny-checkpoint writer and the spec itself, e.g.::

       SPEC = FamilySpec(
           name="my_family", title="My-VL", model_types=("my_vl",), layout="hf", answer=answer,
           seam="my_package.seam.MyCompression",
           plugin=PluginSpec("aot_my_vl", "my_package.adapter.AOTMyVL", builtin="my_vl", chat=True),
           tiny=TinySpec(write_tiny, "tiny-my-vl", (("max_num_frames", 16),)), score_layers=lambda cfg: (0, -1),
       )

4. Register it: ``register_family(SPEC)`` in process, or from another package through the entry
   point group ``aot.families``::

       [project.entry-points."aot.families"]
       my_family = "my_package.family:SPEC"

   It is then a ``--family`` choice of ``aot infer``, an lmms-eval ``--model`` (the plugin lists every
   registered family), a ``--model`` of ``aot sweep`` and a ``model:`` of a table config.
   ``tests/toy_family.py`` is such a module.
"""

from llava.families.infer import InferOptions, format_stats
from llava.families.registry import (
    DEFAULT_FAMILY,
    ENTRY_POINT_GROUP,
    checkpoint_family,
    families,
    family_for_model_type,
    family_of_plugin,
    get_family,
    list_families,
    plugin_models,
    register_family,
    unregister_family,
)
from llava.families.spec import FamilySpec, PluginSpec, TinySpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "DEFAULT_FAMILY",
    "FamilySpec",
    "InferOptions",
    "PluginSpec",
    "TinySpec",
    "checkpoint_family",
    "families",
    "family_for_model_type",
    "family_of_plugin",
    "format_stats",
    "get_family",
    "list_families",
    "plugin_models",
    "register_family",
    "unregister_family",
]

"""lmms-eval plugin models, one file per model family.

=============================  ==========================  ==========================================
module                         lmms-eval ``--model``       what it holds
=============================  ==========================  ==========================================
:mod:`.base`                   (none)                      :class:`~.base.AOTModelAdapter`: model_args
                                                           checking, placement, compression, request
                                                           batching, failed samples, efficiency records
:mod:`.llava_common`           (none)                      :class:`~.llava_common.LlavaAdapter`: LLaVA-NeXT
                                                           loading, templates, batched generation
:mod:`.llava_onevision`        ``aot_llava_onevision``     frame sampling and prompts of ``llava_onevision``
:mod:`.llava_video`            ``aot_llava_vid``           frame sampling, prompts, time instruction and
                                                           config overrides of ``llava_vid``
:mod:`.qwen_vl_common`         (none)                      :class:`~.qwen_vl_common.QwenVLChatAdapter`:
                                                           chat requests, transformers loading, the
                                                           family's seam, batched generation
:mod:`.qwen2_5_vl`             ``aot_qwen2_5_vl``          messages, frames and generation of the
                                                           chat ``qwen2_5_vl``
:mod:`.qwen3_vl`               ``aot_qwen3_vl``            system turn, video arguments, thinking and
                                                           generation of the chat ``qwen3_vl``
=============================  ==========================  ==========================================

lmms-eval finds them through the ``lmms_eval.models`` entry point (:mod:`llava.eval.plugin`) and
imports a module only when a run asks for its model, so nothing is imported here.

A model family's adapter is one class (another Qwen-VL family: subclass
:class:`~.qwen_vl_common.QwenVLChatAdapter` and its seam, :class:`llava.model.qwen_vl.common.QwenVLCompression`);
the family itself is registered in :mod:`llava.families`, whose docstring walks through a whole family:

1. Subclass :class:`~.base.AOTModelAdapter` (or :class:`~.llava_common.LlavaAdapter` for another
   LLaVA-NeXT checkpoint) and set ``MODEL_ID`` to the lmms-eval name, e.g. ``aot_qwen2_5_vl``.
2. Write ``__init__`` with one keyword parameter per model_args key and no ``**kwargs``: the signature
   *is* the list of accepted keys (any other key is refused with an error naming it). Include
   ``compression``, ``device``, ``device_map``, ``batch_size`` and ``max_batch_size`` (lmms-eval passes
   ``batch_size``, ``max_batch_size`` and ``device`` to every model). Every parameter must be read:
   wire it to what it says or leave it out; a key the family's lmms-eval built-in accepts but that
   means nothing here goes into ``RETIRED_MODEL_ARGS`` with the reason, which the error then gives.
3. In ``__init__``: ``super().__init__()``; check the family's own arguments; ``load_map =
   self._setup(compression=..., device=..., device_map=..., batch_size=..., max_batch_size=...)``;
   load the model with ``device_map=load_map``; set ``self._tokenizer``, ``self._config``,
   ``self._max_length``; then ``self._adopt_model(model)``, which sets the compression with
   ``model.set_compression(spec)`` (the model must implement it and report one
   :class:`~llava.model.record.SampleRecord` per visual input in ``last_visual_stats``, as
   :class:`llava.model.seam.VisualSeam` fills them).
4. Implement ``_prepare`` (one request -> :class:`~.base.Prepared`: prompt and visual inputs, or
   ``error`` for a video that cannot be loaded), ``_generate`` (a batch -> answers and
   ``self._sample_record(...)`` accounting, the ``generate`` call inside ``with self._measured()``) and
   ``_loglikelihood_one``.
5. Name its class path in the family's :class:`llava.families.PluginSpec` (the plugin lists every
   registered family), and add its accepted keys with a check each to ``tests/test_adapters.py``
   (which also checks statically that every parameter is read).

Layering: these modules may import :mod:`visionzip`, :mod:`llava.model`, the core ``llava`` modules
and ``llava.eval`` helpers, never ``llava.cli``, ``llava.viz``, ``llava.eval.sweep`` or ``llava.train``.
"""

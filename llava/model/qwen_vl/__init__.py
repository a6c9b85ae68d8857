"""The compression seams for transformers' own Qwen-VL model classes, one module per family.

=========================  ==============================================================
module                     what it holds
=========================  ==============================================================
:mod:`.common`             :class:`~.common.QwenVLCompression`: the per-instance setting, the
                           layout, the vision tower with scores, the compression, the splice
:mod:`.scores`             the attention scores of transformers' Qwen-VL vision towers
:mod:`.qwen2_5_vl`         :class:`~.qwen2_5_vl.Qwen25VLCompression`
:mod:`.qwen3_vl`           :class:`~.qwen3_vl.Qwen3VLCompression` (deepstack levels, timestamps)
=========================  ==============================================================
"""

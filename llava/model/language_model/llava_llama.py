"""LLaVA-NeXT's Llama-based configuration class.

The checkpoints this project targets are Qwen2-based (``llava_qwen``); ``LlavaConfig`` is kept
because scripts and lmms-eval's built-in ``llava_onevision`` adapter import it from here."""

from __future__ import annotations

from transformers import LlamaConfig

from llava.model.multimodal_config import MultimodalConfigMixin


class LlavaConfig(MultimodalConfigMixin, LlamaConfig):
    """Llama configuration plus LLaVA's ``mm_*`` keys (kept as attributes; the layout keys defaulted and
    checked by :class:`~llava.model.multimodal_config.MultimodalConfigMixin`), as in LLaVA-NeXT."""

    model_type = "llava_llama"

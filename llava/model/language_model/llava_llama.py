"""LLaVA-NeXT's Llama-based configuration class.

The checkpoints this project targets are Qwen2-based (``llava_qwen``); ``LlavaConfig`` is kept
because scripts and lmms-eval's built-in ``llava_onevision`` adapter import it from here."""

from __future__ import annotations

from transformers import LlamaConfig


class LlavaConfig(LlamaConfig):
    """Llama configuration plus LLaVA's ``mm_*`` keys (kept as attributes), as in LLaVA-NeXT."""

    model_type = "llava_llama"

"""LLaVA-NeXT's ``LlavaQwenForCausalLM``: a transformers Qwen2 causal LM with a SigLIP vision tower,
an MLP projector and the LLaVA video/image path (``llava.model.llava_arch``)."""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from llava.model.multimodal_config import MultimodalConfigMixin

#: the KV-cache argument of transformers' Qwen2ForCausalLM.forward: ``cache`` since transformers 5.24
#: (``past_key_values`` is deprecated there and stops working in 5.40), ``past_key_values`` before
_CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2ForCausalLM.forward).parameters else "past_key_values"


class LlavaQwenConfig(MultimodalConfigMixin, Qwen2Config):
    """Qwen2 configuration plus LLaVA's ``mm_*`` keys (kept as attributes; the layout keys defaulted and
    checked by :class:`~llava.model.multimodal_config.MultimodalConfigMixin`), the optional
    ``vision_config`` dict (SigLIP geometry; so400m when absent) and ``aot_compression``."""

    model_type = "llava_qwen"
    # read by LLaVA-NeXT code (and lmms-eval's llava_vid) on every checkpoint; released configs set both False
    mm_use_im_start_end = False
    mm_use_im_patch_token = False


class LlavaQwenModel(LlavaMetaModel, Qwen2Model):
    config_class = LlavaQwenConfig

    def __init__(self, config: LlavaQwenConfig):
        Qwen2Model.__init__(self, config)
        self._init_multimodal(config)


class LlavaQwenForCausalLM(Qwen2ForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaQwenConfig

    def __init__(self, config: LlavaQwenConfig):
        Qwen2PreTrainedModel.__init__(self, config)
        self.model = LlavaQwenModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self._aot_config = None
        if getattr(config, "aot_compression", None) is not None:
            self.set_compression(config.aot_compression)

    def get_model(self) -> LlavaQwenModel:
        return self.model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: list[torch.Tensor] | torch.Tensor | None = None,
        image_sizes: list | None = None,
        modalities: list[str] | tuple[str, ...] = ("image",),
        **kwargs,
    ):
        """LLaVA-NeXT's forward. ``past_key_values`` keeps LLaVA-NeXT's name and place; the KV cache may
        also come as ``cache``, transformers' name for it since 5.24."""
        if kwargs.get("cache") is not None:
            if past_key_values is not None:
                raise ValueError("pass the KV cache once: as past_key_values or as cache, not both")
            past_key_values = kwargs.pop("cache")
        kwargs.pop("cache", None)
        if inputs_embeds is None and images is not None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels) = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, past_key_values, labels, images, modalities, image_sizes
                )
            )
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, **{_CACHE_KWARG: past_key_values},
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: list[torch.Tensor] | torch.Tensor | None = None,
        image_sizes: list | None = None,
        modalities: list[str] | tuple[str, ...] = ("image",),
        **kwargs,
    ):
        """LLaVA-NeXT's ``generate(input_ids, images=[...], modalities=[...], image_sizes=...)``.

        Prompts of a batch are left-padded after splicing so that every row generates as it would
        alone. ``questions=[...]`` (the question text per sample) reaches compression methods that read
        it; ``visual_tokens=[...]`` (what ``encode_multimodal`` returned for ``images``) skips encoding them
        again. Returns only the generated tokens (as with ``inputs_embeds`` in transformers)."""
        if inputs is None:
            inputs = kwargs.pop("input_ids", None)
        if "inputs_embeds" in kwargs:
            raise ValueError("inputs_embeds is not supported by generate; pass input_ids and images")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        questions = kwargs.pop("questions", None)  # question text per sample, for methods that read it
        visual_tokens = kwargs.pop("visual_tokens", None)
        if inputs is None:
            raise ValueError("generate needs input_ids (the tokenized prompt with IMAGE_TOKEN_INDEX placeholders)")
        inputs = inputs.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if images is not None:
            (_, _, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask if attention_mask is not None else torch.ones_like(inputs),
                None, None, images, modalities, image_sizes, padding_side="left", questions=questions,
                visual_tokens=visual_tokens,
            )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)
        return super().generate(attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)


# As LLaVA-NeXT does: checkpoints saved by this class say model_type "llava_qwen"; registered, they load
# through transformers' Auto classes (AutoTokenizer reads the config through AutoConfig, and would
# otherwise fall back to the bare PreTrainedConfig with a warning about mismatched model types).
AutoConfig.register("llava_qwen", LlavaQwenConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaQwenConfig, LlavaQwenForCausalLM, exist_ok=True)

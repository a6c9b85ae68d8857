"""``aot_qwen3_vl``: lmms-eval's ``qwen3_vl`` with a compression setting.

``--model qwen3_vl`` resolves, in lmms-eval 0.7.3, to its chat adapter (``lmms_eval/models/chat/qwen3_vl.py``);
this one builds, per request, what that adapter builds (the shared path is
:class:`~llava.eval.adapters.qwen_vl_common.QwenVLChatAdapter`'s):

* the messages: a system turn with ``system_prompt`` first, then the task's; on every video item
  ``min_pixels``, then ``fps`` with ``max_frames`` = ``max_num_frames`` when ``fps`` is given, else
  ``max_frames`` when ``total_pixels`` is given, else ``nframes`` = ``max_num_frames`` (a shorter clip
  then fails, as in the built-in, here as one failed sample), and ``total_pixels`` or else ``max_pixels``;
* the frames: ``qwen_vl_utils.process_vision_info(..., image_patch_size=16, return_video_kwargs=True,
  return_video_metadata=True)``, whose video arguments go to the processor with the message's;
* the prompt: the processor's chat template with the generation prompt (``enable_thinking`` passed on
  when set);
* the inputs: the processor with ``do_resize=False`` (the frames are already resized) and
  ``cap_pixels_per_frame=True`` (the reference per-frame cap; the built-in leaves it unset, which
  transformers warns about on every video), padded left for ``batch_size`` > 1;
* generation: transformers' own ``generate`` with the built-in's defaults (128 new tokens, greedy unless
  the task sets a temperature > 0; only the sampling arguments that are set), the answer decoded with
  ``skip_special_tokens=True``, ``clean_up_tokenization_spaces=False``, and with ``enable_thinking`` the
  text up to ``</think>`` removed.

The model class follows the checkpoint's ``model_type``: ``Qwen3VLForConditionalGeneration`` or
``Qwen3VLMoeForConditionalGeneration`` (the built-in picks by an ``A<n>B`` in the name; the two agree on the
released checkpoints). The compression runs through :class:`llava.model.qwen_vl.qwen3_vl.Qwen3VLCompression`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llava.eval.adapters.base import Prepared, str2bool
from llava.eval.adapters.qwen_vl_common import QwenVLChatAdapter, check_checkpoint_type
from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression

__all__ = ["AOTQwen3VL"]

_UNUSED = ("lmms-eval's qwen3_vl chat adapter (what --model qwen3_vl runs) accepts it but never reads it, "
           "so it would change nothing there; leave it out")


class AOTQwen3VL(QwenVLChatAdapter):
    """Qwen3-VL (transformers' ``Qwen3VLForConditionalGeneration`` or the MoE class) behind lmms-eval, with
    compression."""

    MODEL_ID = "aot_qwen3_vl"
    IMAGE_PATCH_SIZE = 16
    RETIRED_MODEL_ARGS: ClassVar[dict[str, str]] = {"interleave_visuals": _UNUSED, "reasoning_prompt": _UNUSED}

    def __init__(
        self,
        pretrained: str = "Qwen/Qwen3-VL-4B-Instruct",
        compression: str | None = "none",
        device: str | None = None,
        device_map: str | None = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        use_cache: Any = True,
        attn_implementation: str | None = None,
        min_pixels: int = 256 * 28 * 28,
        max_pixels: int = 1605632,
        total_pixels: int | None = None,
        max_num_frames: int = 32,
        fps: float | None = None,
        system_prompt: str | None = "You are a helpful assistant.",
        enable_thinking: Any = None,
        torch_dtype: str = "bfloat16",
        shallow_score_layer: int | None = None,
        deep_score_layer: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

        bad_total = isinstance(total_pixels, bool) or not isinstance(total_pixels, int) or total_pixels < 1
        if total_pixels is not None and bad_total:
            raise ValueError(f"total_pixels={total_pixels!r} is not valid; expected an integer >= 1, or none")
        self.total_pixels = total_pixels
        self.system_prompt = system_prompt
        self.enable_thinking = None if enable_thinking is None else str2bool(enable_thinking)
        model_type = check_checkpoint_type(
            pretrained, self.MODEL_ID, ("qwen3_vl", "qwen3_vl_moe"),
            "Qwen3-VL in the Hugging Face layout; Qwen2.5-VL runs with aot_qwen2_5_vl, LLaVA-NeXT checkpoints with "
            "aot_llava_onevision or aot_llava_vid",
        )
        model_cls = (Qwen3VLMoeForConditionalGeneration if model_type == "qwen3_vl_moe"
                     else Qwen3VLForConditionalGeneration)
        self._load_qwen(
            pretrained=pretrained, model_cls=model_cls, seam_cls=Qwen3VLCompression, compression=compression,
            device=device, device_map=device_map, batch_size=batch_size, max_batch_size=max_batch_size,
            use_cache=use_cache, attn_implementation=attn_implementation, min_pixels=min_pixels,
            max_pixels=max_pixels, max_num_frames=max_num_frames, fps=fps, torch_dtype=torch_dtype,
            score_layers=(shallow_score_layer, deep_score_layer),
        )

    def _messages(self, messages: list[dict]) -> list[dict]:
        return [{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}, *messages]

    def _video_kwargs(self, videos: list[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"min_pixels": self.min_pixels}
        if self.fps is not None:
            kwargs.update(fps=self.fps, max_frames=self.max_num_frames)
        elif self.total_pixels is not None:
            kwargs["max_frames"] = self.max_num_frames
        else:
            kwargs["nframes"] = self.max_num_frames
        if self.total_pixels is not None:
            kwargs["total_pixels"] = self.total_pixels
        else:
            kwargs["max_pixels"] = self.max_pixels
        return kwargs

    def _prompt(self, messages: list[dict]) -> str:
        extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return self.processor.apply_chat_template([messages], tokenize=False, add_generation_prompt=True, **extra)[0]

    def _processor_kwargs(self, batch: list[Prepared]) -> dict[str, Any]:
        # the frames keep qwen-vl-utils' sizing (do_resize=False, as the built-in); the per-frame cap is the
        # reference's (cap_pixels_per_frame=True), which also keeps transformers' warning away
        kwargs = {**batch[0].payload["video_kwargs"], "do_resize": False, "cap_pixels_per_frame": True}
        if self.batch_size > 1:
            kwargs.update(padding=True, padding_side="left")
        return kwargs

    def _generation_kwargs(self, gen_kwargs: dict) -> dict[str, Any]:
        """The built-in's: its defaults under the task's, greedy unless the temperature is > 0, only the
        sampling arguments that are set."""
        current = {"max_new_tokens": 128, "temperature": 0.0, "top_p": None, "num_beams": 1, **gen_kwargs}
        if current.get("temperature", 0) > 0:
            current["do_sample"] = True
        else:
            current.update(do_sample=False, temperature=None, top_p=None)
            current.pop("top_k", None)
        out = {"eos_token_id": self.tokenizer.eos_token_id, "pad_token_id": self.tokenizer.pad_token_id,
               "max_new_tokens": current["max_new_tokens"], "use_cache": self.use_cache,
               "do_sample": current["do_sample"]}
        out.update({k: current[k] for k in ("temperature", "top_p", "top_k", "num_beams")
                    if current.get(k) is not None})
        return out

    def _answer(self, text: str) -> str:
        if self.enable_thinking:  # as the built-in: what follows </think> (nothing when it is missing)
            return text.partition("</think>")[2].strip()
        return text

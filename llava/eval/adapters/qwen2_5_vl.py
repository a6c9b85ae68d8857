"""``aot_qwen2_5_vl``: lmms-eval's ``qwen2_5_vl`` with a compression setting.

``--model qwen2_5_vl`` resolves, in lmms-eval 0.7.3, to its chat adapter
(``lmms_eval/models/chat/qwen2_5_vl.py``); this one builds, per request, what that adapter builds
(the shared path is :class:`~llava.eval.adapters.qwen_vl_common.QwenVLChatAdapter`'s):

* the messages: the task's, with ``max_pixels`` / ``min_pixels`` and either ``fps`` or ``nframes`` =
  min(``max_num_frames``, frames in the clip), rounded down to even, at least 2, on every video item (the
  built-in probes the batch's first video for every sample; here each sample's own video is probed,
  which is the same at batch size 1);
* the frames: ``qwen_vl_utils.process_vision_info(..., return_video_kwargs=True, return_video_metadata=True)``;
* the prompt: the processor's chat template with the generation prompt, no system turn added (the
  template's own "You are a helpful assistant." applies);
* the inputs: the processor, padded left for ``batch_size`` > 1 (right otherwise), with the reference
  per-frame pixel cap (``cap_pixels_per_frame=True``: qwen-vl-utils' sizing, which the frames already have;
  the built-in leaves it unset, which transformers warns about on every video, with the same result);
* generation: transformers' own ``generate`` with the built-in's defaults (128 new tokens, greedy unless
  the task sets a temperature > 0), the answer decoded with ``skip_special_tokens=True``,
  ``clean_up_tokenization_spaces=False``.

The compression runs through :class:`llava.model.qwen_vl.qwen2_5_vl.Qwen25VLCompression`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llava.eval.adapters.base import Prepared
from llava.eval.adapters.qwen_vl_common import QwenVLChatAdapter, check_checkpoint_type, frames_in
from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression

__all__ = ["AOTQwen25VL", "check_qwen2_5_vl_checkpoint"]

_UNUSED = ("lmms-eval's qwen2_5_vl chat adapter (what --model qwen2_5_vl runs) accepts it but never reads it, "
           "so it would change nothing there; leave it out")


def check_qwen2_5_vl_checkpoint(pretrained: str) -> None:
    """Refuse a checkpoint of another family before any weight is read, naming its ``model_type``."""
    check_checkpoint_type(pretrained, "aot_qwen2_5_vl", ("qwen2_5_vl",),
                          "Qwen2.5-VL in the Hugging Face layout; LLaVA-NeXT checkpoints run with aot_llava_onevision "
                          "or aot_llava_vid, Qwen3-VL with aot_qwen3_vl")


class AOTQwen25VL(QwenVLChatAdapter):
    """Qwen2.5-VL (transformers' ``Qwen2_5_VLForConditionalGeneration``) behind lmms-eval, with compression."""

    MODEL_ID = "aot_qwen2_5_vl"
    RETIRED_MODEL_ARGS: ClassVar[dict[str, str]] = {
        "system_prompt": _UNUSED, "interleave_visuals": _UNUSED, "reasoning_prompt": _UNUSED,
    }

    def __init__(
        self,
        pretrained: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        compression: str | None = "none",
        device: str | None = None,
        device_map: str | None = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        use_cache: Any = True,
        attn_implementation: str | None = None,
        min_pixels: int = 256 * 28 * 28,
        max_pixels: int = 1605632,
        max_num_frames: int = 32,
        fps: float | None = None,
        torch_dtype: str = "bfloat16",
        shallow_score_layer: int | None = None,
        deep_score_layer: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import Qwen2_5_VLForConditionalGeneration

        check_qwen2_5_vl_checkpoint(pretrained)
        self._load_qwen(
            pretrained=pretrained, model_cls=Qwen2_5_VLForConditionalGeneration, seam_cls=Qwen25VLCompression,
            compression=compression, device=device, device_map=device_map, batch_size=batch_size,
            max_batch_size=max_batch_size, use_cache=use_cache, attn_implementation=attn_implementation,
            min_pixels=min_pixels, max_pixels=max_pixels, max_num_frames=max_num_frames, fps=fps,
            torch_dtype=torch_dtype, score_layers=(shallow_score_layer, deep_score_layer),
        )

    def _video_kwargs(self, videos: list[Any]) -> dict[str, Any]:
        """Pixel bounds and ``fps`` or ``nframes`` (the clip probed as the built-in probes it)."""
        kwargs: dict[str, Any] = {"max_pixels": self.max_pixels, "min_pixels": self.min_pixels}
        if self.fps is not None:
            kwargs["fps"] = self.fps
        elif videos and isinstance(videos[0], str):
            kwargs["nframes"] = max(2, (min(self.max_num_frames, frames_in(videos[0])) // 2) * 2)
        else:
            kwargs["nframes"] = self.max_num_frames
        return kwargs

    def _processor_kwargs(self, batch: list[Prepared]) -> dict[str, Any]:
        """Padding as the built-in pads, and the reference per-frame pixel cap (``cap_pixels_per_frame``): the
        processor then sizes every frame as ``qwen_vl_utils`` sized it, so token counts are the reference's."""
        return {"padding": True, "padding_side": "left" if self.batch_size > 1 else "right",
                "cap_pixels_per_frame": True}

    def _generation_kwargs(self, gen_kwargs: dict) -> dict[str, Any]:
        """The built-in's: its defaults under the task's, greedy unless the temperature is > 0."""
        current = {"max_new_tokens": 128, "temperature": 0.0, "top_p": None, "num_beams": 1, **gen_kwargs}
        sample = bool(current["temperature"] and current["temperature"] > 0)
        return {
            "eos_token_id": self.tokenizer.eos_token_id, "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": sample, "temperature": current["temperature"] if sample else None,
            "top_p": current["top_p"] if sample else None, "num_beams": current["num_beams"],
            "max_new_tokens": current["max_new_tokens"], "top_k": current.get("top_k") if sample else None,
            "use_cache": self.use_cache,
        }

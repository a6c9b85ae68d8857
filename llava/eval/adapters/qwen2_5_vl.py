"""``aot_qwen2_5_vl``: lmms-eval's ``qwen2_5_vl`` with a compression setting.

``--model qwen2_5_vl`` resolves, in lmms-eval 0.7.3, to its *chat* adapter
(``lmms_eval/models/chat/qwen2_5_vl.py``), so this one is a chat model too (``is_simple = False``: a
request carries the task's ``doc_to_messages``) and builds what that adapter builds, per request:

* the messages: ``ChatMessages.to_hf_messages`` with ``max_pixels`` / ``min_pixels`` and either ``fps``
  or ``nframes`` = min(``max_num_frames``, frames in the clip), rounded down to even, at least 2
  (the built-in probes the batch's first video for every sample; here each sample's own video is
  probed, which is the same at batch size 1);
* the frames: ``qwen_vl_utils.process_vision_info(..., return_video_kwargs=True,
  return_video_metadata=True)``;
* the prompt: the processor's chat template with the generation prompt, no system turn added (the
  template's own "You are a helpful assistant." applies);
* the inputs: the processor, padded left for ``batch_size`` > 1 (right otherwise);
* generation: transformers' own ``generate`` with the built-in's defaults (128 new tokens, greedy unless
  the task sets a temperature > 0), the answer decoded with ``skip_special_tokens=True``,
  ``clean_up_tokenization_spaces=False``.

With ``compression=none`` the model's own ``generate`` runs on the processor's inputs, as in the
built-in. With a compression, :class:`llava.model.qwen2_5_vl.Qwen25VLCompression` turns the same inputs
into the compressed prompt (``inputs_embeds`` and 3-D ``position_ids``) and generates from it.

What differs from the built-in, on purpose: a video that cannot be loaded fails its sample alone (it is
answered so that the task scores it wrong, and counted as failed); every sample's efficiency is
recorded (:mod:`llava.eval.efficiency`); ``torch_dtype`` may be set (the built-in hard-codes bfloat16,
the default here); unknown model_args are refused, and so are the built-in's keys that its chat adapter
reads but never uses (``RETIRED_MODEL_ARGS``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from transformers import StoppingCriteriaList

from llava.eval import efficiency as eff
from llava.eval.adapters.base import AOTModelAdapter, Prepared, str2bool
from llava.model.qwen2_5_vl import Qwen25VLCompression
from llava.model.visual_stats import VisualStats

__all__ = ["AOTQwen25VL", "check_qwen2_5_vl_checkpoint"]

_UNUSED = ("lmms-eval's qwen2_5_vl chat adapter (what --model qwen2_5_vl runs) accepts it but never reads it, "
           "so it would change nothing there; leave it out")


def check_qwen2_5_vl_checkpoint(pretrained: str) -> None:
    """Refuse a checkpoint of another family before any weight is read, naming its ``model_type``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as exc:
        raise ValueError(f"pretrained={pretrained!r}: no Hugging Face config could be read ({exc}); expected a "
                         "Qwen2.5-VL checkpoint folder or hub id (config.json with model_type 'qwen2_5_vl')") from None
    model_type = getattr(config, "model_type", None)
    if model_type != "qwen2_5_vl":
        raise ValueError(
            f"pretrained={pretrained!r} is a {model_type!r} checkpoint; aot_qwen2_5_vl expected model_type "
            "'qwen2_5_vl' (Qwen2.5-VL in the Hugging Face layout; LLaVA-NeXT checkpoints run with "
            "aot_llava_onevision or aot_llava_vid)"
        )


def _frames_in(path: str) -> int:
    import decord

    return len(decord.VideoReader(path))


class AOTQwen25VL(AOTModelAdapter):
    """Qwen2.5-VL (transformers' ``Qwen2_5_VLForConditionalGeneration``) behind lmms-eval, with compression."""

    MODEL_ID = "aot_qwen2_5_vl"
    is_simple = False
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
        from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        if attn_implementation not in (None, "flash_attention_2", "sdpa", "eager"):
            raise ValueError(f"attn_implementation={attn_implementation!r} is not valid; expected one of "
                             "None, 'flash_attention_2', 'sdpa', 'eager'")
        if torch_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"torch_dtype={torch_dtype!r} is not valid; expected bfloat16, float16 or float32")
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels), ("max_num_frames", max_num_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")
        if min_pixels > max_pixels:
            raise ValueError(f"min_pixels={min_pixels} exceeds max_pixels={max_pixels}; expected min_pixels <= max_pixels")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
            raise ValueError(f"fps={fps!r} is not valid; expected a number > 0, or no fps (then max_num_frames frames)")
        layers = (shallow_score_layer, deep_score_layer)
        if (layers[0] is None) != (layers[1] is None):
            raise ValueError(f"shallow_score_layer={layers[0]!r}, deep_score_layer={layers[1]!r}: expected both or neither "
                             "(neither: the first and last full-attention blocks of the vision tower)")
        check_qwen2_5_vl_checkpoint(pretrained)
        load_map = self._setup(compression=compression, device=device, device_map=device_map, batch_size=batch_size,
                               max_batch_size=max_batch_size)
        kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, "device_map": load_map}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(pretrained, **kwargs)
        self.pretrained = pretrained
        self.max_pixels, self.min_pixels, self.max_num_frames, self.fps = max_pixels, min_pixels, max_num_frames, fps
        self.use_cache = str2bool(use_cache)
        self.processor = AutoProcessor.from_pretrained(pretrained, max_pixels=max_pixels, min_pixels=min_pixels)
        self._tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self._config = model.config
        self._max_length = 2048
        score_layers = None if layers[0] is None else (int(layers[0]), int(layers[1]))
        self._seam = Qwen25VLCompression(model, score_layers=score_layers)
        self._adopt_model(model)

    # ------------------------------------------------------------------ compression
    def set_compression(self, spec: Any) -> None:
        off = spec in (None, "", "none")
        self._seam.set_compression(None if off else spec)
        self.compression_name = "none" if off else str(spec)

    # ------------------------------------------------------------------ requests
    def _video_kwargs(self, videos: list[str]) -> dict[str, Any]:
        """What the built-in adds to every video item: pixel bounds and ``fps`` or ``nframes``."""
        kwargs: dict[str, Any] = {"max_pixels": self.max_pixels, "min_pixels": self.min_pixels}
        if self.fps is not None:
            kwargs["fps"] = self.fps
        elif videos and isinstance(videos[0], str):
            kwargs["nframes"] = max(2, (min(self.max_num_frames, _frames_in(videos[0])) // 2) * 2)
        else:
            kwargs["nframes"] = self.max_num_frames
        return kwargs

    def _prepare(self, index: int, context: str, visual: Any, gen_kwargs: dict, task: str, doc_id: Any) -> Prepared:
        from lmms_eval.protocol import ChatMessages
        from qwen_vl_utils import process_vision_info

        started = time.perf_counter()
        p = Prepared(index, context, task, doc_id)
        try:
            chat = ChatMessages(messages=visual)
            images, videos, _ = chat.extract_media()
            messages = chat.to_hf_messages(video_kwargs=self._video_kwargs(videos))
            image_inputs, video_inputs, _ = process_vision_info([messages], return_video_kwargs=True,
                                                                return_video_metadata=True)
        except Exception as exc:  # noqa: BLE001 - a video that cannot be read fails its sample alone
            p.error = f"visual input could not be loaded: {type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - started) * 1000
            return p
        p.prompt = self.processor.apply_chat_template([messages], tokenize=False, add_generation_prompt=True)[0]
        p.question = " ".join(c["text"] for m in messages if m["role"] == "user" for c in m["content"] if c["type"] == "text")
        p.visuals = [v for v, _ in (video_inputs or [])]
        p.modalities = ["video"] * len(p.visuals) + ["image"] * len(image_inputs or [])
        p.payload = {"images": list(image_inputs or []), "metadata": [m for _, m in (video_inputs or [])]}
        p.load_ms = (time.perf_counter() - started) * 1000
        return p

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

    def _generate(self, batch: list[Prepared], gen_kwargs: dict) -> dict[int, tuple[str, eff.SampleEfficiency]]:
        videos = [v for p in batch for v in p.visuals]
        images = [i for p in batch for i in p.payload["images"]]
        metadata = [m for p in batch for m in p.payload["metadata"]]
        compress = self._seam.compression is not None and bool(videos)
        if compress and images:
            raise ValueError(f"compression={self.compression_name!r} splices videos only; this batch also holds "
                             f"{len(images)} image(s): expected video prompts, or compression none")
        inputs = self.processor(
            text=[p.prompt for p in batch], images=images or None, videos=videos or None,
            video_metadata=metadata or None, padding=True, padding_side="left" if self.batch_size > 1 else "right",
            return_tensors="pt",
        ).to(self.device)
        kwargs = self._generation_kwargs(gen_kwargs)
        with self._measured() as m:
            criteria = StoppingCriteriaList([m.clock])
            with torch.inference_mode():
                if compress:
                    questions = [p.question for p in batch for _ in p.visuals]
                    new = self._seam.generate(**inputs, questions=questions, stopping_criteria=criteria, **kwargs)
                else:
                    out = self.model.generate(**inputs, stopping_criteria=criteria, **kwargs)
                    new = out[:, inputs["input_ids"].shape[1]:]
        answers = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        stats = list(self._seam.last_visual_stats) if compress else self._plain_stats(inputs)
        video_id = int(self.model.config.video_token_id)
        pad_id = self.tokenizer.pad_token_id
        results: dict[int, tuple[str, eff.SampleEfficiency]] = {}
        cursor = 0
        for row, p in enumerate(batch):
            mine = stats[cursor:cursor + len(p.visuals)]
            cursor += len(p.visuals)
            ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
            text_tokens = int((ids != video_id).sum())
            generated = new[row].tolist()
            while generated and generated[-1] == pad_id:
                generated.pop()
            results[p.index] = (answers[row], self._sample_record(p, mine, text_tokens=text_tokens,
                                                                  output_tokens=len(generated), measurement=m))
        return results

    def _plain_stats(self, inputs: Any) -> list[VisualStats]:
        """Per video of an uncompressed batch: the merged grid the model sends."""
        grid = inputs.get("video_grid_thw")
        if grid is None:
            return []
        merge = int(self.model.config.vision_config.spatial_merge_size)
        temporal = int(self.model.config.vision_config.temporal_patch_size)
        stats = []
        for t, h, w in grid.tolist():
            n = int(t) * (int(h) // merge) * (int(w) // merge)
            stats.append(VisualStats("video", int(t) * temporal, n, n, {"input": n}, 1.0))
        return stats

    def loglikelihood(self, requests):
        raise NotImplementedError(
            "aot_qwen2_5_vl answers generate_until tasks; loglikelihood is not implemented, as in lmms-eval's own qwen2_5_vl"
        )

"""What the Qwen-VL plugin models share: :class:`QwenVLChatAdapter`.

lmms-eval 0.7.3 resolves ``--model qwen2_5_vl`` and ``--model qwen3_vl`` to its *chat* adapters
(``lmms_eval/models/chat/qwen2_5_vl.py``, ``chat/qwen3_vl.py``), so these plugins are chat models too
(``is_simple = False``: a request carries the task's ``doc_to_messages``). Per request they build what the
family's built-in builds: the messages (:meth:`QwenVLChatAdapter._messages`) with the video settings
(:meth:`QwenVLChatAdapter._video_kwargs`), the frames through ``qwen_vl_utils.process_vision_info``, the
prompt through the processor's chat template, the processor's inputs for the batch
(:meth:`QwenVLChatAdapter._processor_kwargs`) and the generation arguments
(:meth:`QwenVLChatAdapter._generation_kwargs`); a family module fills these in.

With ``compression=none`` the model's own ``generate`` runs on the processor's inputs, as in the built-in.
With a compression, the family's seam (:mod:`llava.model.qwen_vl.qwen2_5_vl`,
:mod:`llava.model.qwen_vl.qwen3_vl`) turns the same inputs into the compressed prompt and generates from it.

What differs from the built-ins, on purpose: a video that cannot be loaded fails its sample alone (it is
answered so that the task scores it wrong, and counted as failed); every sample's efficiency is recorded
(:mod:`llava.eval.efficiency`); ``torch_dtype`` may be set (the built-ins hard-code bfloat16, the default
here); unknown model_args are refused, and so are the built-in's keys that its chat adapter never reads
(``RETIRED_MODEL_ARGS``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from transformers import StoppingCriteriaList

from llava.eval.adapters.base import AOTModelAdapter, Prepared, str2bool
from llava.model.record import SampleRecord
from llava.model.seam import uncompressed_record

__all__ = ["QwenVLChatAdapter", "check_checkpoint_type", "frames_in"]


def check_checkpoint_type(pretrained: str, model_id: str, expected: tuple[str, ...], others: str) -> str:
    """The checkpoint's ``model_type``, refused before any weight is read when it is not one of
    ``expected``; ``others`` says where another family runs."""
    from transformers import AutoConfig

    names = " or ".join(repr(t) for t in expected)
    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as exc:
        raise ValueError(f"pretrained={pretrained!r}: no Hugging Face config could be read ({exc}); expected a "
                         f"checkpoint folder or hub id whose config.json has model_type {names}") from None
    model_type = getattr(config, "model_type", None)
    if model_type not in expected:
        raise ValueError(f"pretrained={pretrained!r} is a {model_type!r} checkpoint; {model_id} expected model_type "
                         f"{names} ({others})")
    return str(model_type)


def frames_in(path: str) -> int:
    """Frames in a video file (decord), as the built-ins probe it."""
    import decord

    return len(decord.VideoReader(path))


class QwenVLChatAdapter(AOTModelAdapter):
    """A transformers Qwen-VL model behind lmms-eval, with compression; subclassed per family."""

    is_simple = False
    #: ``image_patch_size`` of ``process_vision_info`` (None: its default, 14)
    IMAGE_PATCH_SIZE: ClassVar[int | None] = None

    def _load_qwen(self, *, pretrained: str, model_cls: Any, seam_cls: Any, compression: Any, device: Any,
                   device_map: Any, batch_size: Any, max_batch_size: Any, use_cache: Any,
                   attn_implementation: str | None, min_pixels: int, max_pixels: int, max_num_frames: int,
                   fps: float | None, torch_dtype: str, score_layers: tuple[Any, Any]) -> None:
        """Check the shared arguments, load the model, processor and tokenizer as the built-ins do, and
        adopt the model with its seam. Call after the family checked its own arguments and the checkpoint."""
        from transformers import AutoProcessor, AutoTokenizer

        if attn_implementation not in (None, "flash_attention_2", "sdpa", "eager"):
            raise ValueError(f"attn_implementation={attn_implementation!r} is not valid; expected one of "
                             "None, 'flash_attention_2', 'sdpa', 'eager'")
        if torch_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"torch_dtype={torch_dtype!r} is not valid; expected bfloat16, float16 or float32")
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels), ("max_num_frames", max_num_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")
        if min_pixels > max_pixels:
            raise ValueError(
                f"min_pixels={min_pixels} exceeds max_pixels={max_pixels}; expected min_pixels <= max_pixels"
            )
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
            raise ValueError(f"fps={fps!r} is not valid; expected a number > 0, or no fps (then max_num_frames frames)")
        shallow, deep = score_layers
        if (shallow is None) != (deep is None):
            raise ValueError(f"shallow_score_layer={shallow!r}, deep_score_layer={deep!r}: expected both or neither "
                             "(neither: the family's default blocks, docs/methods.md)")
        load_map = self._setup(compression=compression, device=device, device_map=device_map, batch_size=batch_size,
                               max_batch_size=max_batch_size)
        kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, "device_map": load_map}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model = model_cls.from_pretrained(pretrained, **kwargs)
        self.pretrained = pretrained
        self.max_pixels, self.min_pixels, self.max_num_frames, self.fps = max_pixels, min_pixels, max_num_frames, fps
        self.use_cache = str2bool(use_cache)
        self.processor = AutoProcessor.from_pretrained(pretrained, max_pixels=max_pixels, min_pixels=min_pixels)
        self._tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self._config = model.config
        self._max_length = 2048
        self._seam = seam_cls(model, score_layers=None if shallow is None else (int(shallow), int(deep)))
        self._adopt_model(model)

    # ------------------------------------------------------------------ compression
    def set_compression(self, spec: Any) -> None:
        off = spec in (None, "", "none")
        self._seam.set_compression(None if off else spec)
        self.compression_name = "none" if off else str(spec)

    # ------------------------------------------------------------------ per family
    def _messages(self, messages: list[dict]) -> list[dict]:
        """The document's messages as the built-in hands them on (Qwen3-VL adds its system turn)."""
        return messages

    def _video_kwargs(self, videos: list[Any]) -> dict[str, Any]:
        """What the built-in adds to every video item of the messages."""
        raise NotImplementedError

    def _prompt(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template([messages], tokenize=False, add_generation_prompt=True)[0]

    def _processor_kwargs(self, batch: list[Prepared]) -> dict[str, Any]:
        """The processor's keyword arguments for a batch, besides text, images, videos and metadata."""
        raise NotImplementedError

    def _generation_kwargs(self, gen_kwargs: dict) -> dict[str, Any]:
        raise NotImplementedError

    def _answer(self, text: str) -> str:
        return text

    # ------------------------------------------------------------------ requests
    def _prepare(self, index: int, context: str, visual: Any, gen_kwargs: dict, task: str, doc_id: Any) -> Prepared:
        from lmms_eval.protocol import ChatMessages
        from qwen_vl_utils import process_vision_info

        started = time.perf_counter()
        p = Prepared(index, context, task, doc_id)
        videos: list[Any] = []
        try:
            chat = ChatMessages(messages=self._messages(list(visual)))
            images, videos, _ = chat.extract_media()
            video_kwargs = self._video_kwargs(videos)
            messages = chat.to_hf_messages(video_kwargs=video_kwargs)
            extra = {} if self.IMAGE_PATCH_SIZE is None else {"image_patch_size": self.IMAGE_PATCH_SIZE}
            image_inputs, video_inputs, vision_kwargs = process_vision_info(
                [messages], return_video_kwargs=True, return_video_metadata=True, **extra)
        except Exception as exc:  # noqa: BLE001 - a video that cannot be read fails its sample alone
            named = ", ".join(str(v) for v in videos if isinstance(v, str))
            p.error = f"visual input {named + ' ' if named else ''}could not be loaded: {type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - started) * 1000
            return p
        p.prompt = self._prompt(messages)
        p.question = " ".join(c["text"] for m in messages if m["role"] == "user"
                              for c in m["content"] if c["type"] == "text")
        p.visuals = [v for v, _ in (video_inputs or [])]
        p.modalities = ["video"] * len(p.visuals) + ["image"] * len(image_inputs or [])
        p.payload = {"images": list(image_inputs or []), "metadata": [m for _, m in (video_inputs or [])],
                     "video_kwargs": {**video_kwargs, **(vision_kwargs or {})}}
        p.load_ms = (time.perf_counter() - started) * 1000
        return p

    def _generate(self, batch: list[Prepared], gen_kwargs: dict) -> dict[int, tuple[str, SampleRecord]]:
        videos = [v for p in batch for v in p.visuals]
        images = [i for p in batch for i in p.payload["images"]]
        metadata = [m for p in batch for m in p.payload["metadata"]]
        compress = self._seam.compression is not None and bool(videos)
        if compress and images:
            raise ValueError(f"compression={self.compression_name!r} splices videos only; this batch also holds "
                             f"{len(images)} image(s): expected video prompts, or compression none")
        inputs = self.processor(
            text=[p.prompt for p in batch], images=images or None, videos=videos or None,
            video_metadata=metadata or None, return_tensors="pt", **self._processor_kwargs(batch),
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
        results: dict[int, tuple[str, SampleRecord]] = {}
        cursor = 0
        for row, p in enumerate(batch):
            mine = stats[cursor:cursor + len(p.visuals)]
            cursor += len(p.visuals)
            ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
            text_tokens = int((ids != video_id).sum())
            generated = new[row].tolist()
            while generated and generated[-1] == pad_id:
                generated.pop()
            results[p.index] = (self._answer(answers[row]), self._sample_record(
                p, mine, text_tokens=text_tokens, output_tokens=len(generated), measurement=m))
        return results

    def _plain_stats(self, inputs: Any) -> list[SampleRecord]:
        """Per video of an uncompressed batch (the model's own ``generate`` ran): what the model spliced."""
        grid = inputs.get("video_grid_thw")
        return [] if grid is None else [uncompressed_record(layout) for layout in self._seam.video_layouts(grid)]

    def loglikelihood(self, requests):
        raise NotImplementedError(
            f"{self.MODEL_ID} answers generate_until tasks; loglikelihood is not implemented, as in lmms-eval's "
            "own adapter"
        )

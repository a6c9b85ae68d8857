"""What the LLaVA-NeXT families (LLaVA-OneVision, LLaVA-Video) share: :class:`LlavaAdapter`.

Loading through :func:`llava.model.builder.load_pretrained_model`, LLaVA-NeXT's conversation templates,
``<image>`` placeholders spliced by the model (``IMAGE_TOKEN_INDEX``), left-padded batched generation
and the loglikelihood of one continuation. Frame sampling, prompt building and the config overrides
are each family's (:mod:`llava.eval.adapters.llava_onevision`, :mod:`llava.eval.adapters.llava_video`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import StoppingCriteriaList

import visionzip
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.eval.adapters.base import AOTModelAdapter, Prepared, str2bool
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.llava_arch import resolve_compression
from llava.model.record import SampleRecord

__all__ = ["LlavaAdapter"]


class LlavaAdapter(AOTModelAdapter):
    """A LLaVA-NeXT checkpoint (``llava_qwen``) behind lmms-eval; subclassed per family."""

    def _planned_layout(self):
        """``max_frames_num`` frames on the checkpoint's grid and pooling (the most a video can have)."""
        return self.model.video_layout(self.max_frames_num)

    def _layout_from_config(self, pretrained: str, overwrite_config: dict[str, Any]) -> Any:
        """The layout :meth:`_planned_layout` will have, read from the checkpoint's ``config.json`` alone
        (None when it cannot be read here: the loader then reports why)."""
        from llava.model.language_model.llava_qwen import LlavaQwenConfig
        from llava.model.multimodal_encoder.builder import vision_grid_side

        try:
            config = LlavaQwenConfig.from_dict(LlavaQwenConfig.get_config_dict(pretrained)[0])
            for key, value in overwrite_config.items():
                setattr(config, key, value)
            side = vision_grid_side(config)
            return visionzip.VideoLayout(frames=self.max_frames_num, grid=(side, side),
                                         pool_mode=config.mm_spatial_pool_mode,
                                         pool_stride=config.mm_spatial_pool_stride,
                                         newline_position=config.mm_newline_position)
        except (OSError, ValueError, TypeError):
            return None

    def _load_llava(
        self,
        *,
        pretrained: str,
        model_name: str | None,
        attn_implementation: str | None,
        torch_dtype: str,
        customized_config: str | None,
        overwrite_config: dict[str, Any],
        conv_template: str,
        use_cache: Any,
        video_decode_backend: str,
        load_map: Any,
    ) -> None:
        """Load the checkpoint (after :meth:`_setup`) and adopt it (:meth:`_adopt_model`).

        ``model_name`` picks the architecture in LLaVA-NeXT's loader; this package builds ``llava_qwen``
        only, so a name given must be one LLaVA-NeXT maps to it (it contains ``qwen``)."""
        self._check_llava_args(model_name=model_name, conv_template=conv_template,
                               video_decode_backend=video_decode_backend)
        compression = resolve_compression(self.compression_name)
        if customized_config is None and compression is not None:
            self._check_budget(self._layout_from_config(pretrained, overwrite_config), compression)
        self.pretrained = pretrained
        self._tokenizer, model, self._image_processor, self._max_length = load_pretrained_model(
            pretrained, None, model_name or get_model_name_from_path(pretrained), device_map=load_map,
            torch_dtype=torch_dtype, attn_implementation=attn_implementation, customized_config=customized_config,
            overwrite_config=overwrite_config,
        )
        self._config = model.config
        if self._tokenizer.pad_token_id is None and "qwen" in str(getattr(self._tokenizer, "name_or_path", "")).lower():
            self._tokenizer.pad_token_id = 151643
        self.conv_template = conv_template
        self.use_cache = str2bool(use_cache)
        self._adopt_model(model)

    @staticmethod
    def _check_llava_args(*, model_name: str | None, conv_template: str, video_decode_backend: str) -> None:
        """The LLaVA arguments that can be refused before any weight is read."""
        if video_decode_backend != "decord":
            raise ValueError(f"video_decode_backend={video_decode_backend!r} is not supported; expected 'decord'")
        if conv_template not in conv_templates:
            raise ValueError(f"conv_template={conv_template!r} is unknown; expected one of {sorted(conv_templates)}")
        if model_name not in (None, "") and "qwen" not in str(model_name).lower():
            raise ValueError(
                f"model_name={model_name!r} selects a LLaVA-NeXT architecture other than llava_qwen, the only one this "
                "package builds; expected a name containing 'qwen' (e.g. llava_qwen), or no model_name"
            )

    # -- prompts
    def _new_conv(self):
        template = conv_templates[self.conv_template]
        return copy.deepcopy(template) if "llama_3" in self.conv_template else template.copy()

    def _stop_words(self) -> list[str]:
        conv = conv_templates[self.conv_template]
        return [conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2]

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        """The task's ``generation_kwargs`` as this family's built-in hands them to ``generate``."""
        raise NotImplementedError

    # -- generation
    def _prompt_reads_visuals(self) -> bool:
        """Whether the prompts describe what the compression keeps (then the videos are encoded first and
        :meth:`_prompts_from_visuals` rewrites the prompts); False here."""
        return False

    def _prompts_from_visuals(self, batch: list[Prepared], records: list[SampleRecord]) -> None:
        """Rewrite ``prompt`` (and ``frame_times``) of each request of ``batch`` from the seam's records of
        its visual inputs (in order); called only where :meth:`_prompt_reads_visuals`."""
        raise NotImplementedError

    def _tokenized(self, batch: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], int]:
        """The batch's prompts, left-padded (the prompts end together): ``(input_ids, attention_mask,
        ids per prompt, pad id)``."""
        ids_list = [tokenizer_image_token(p.prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
                    for p in batch]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        longest = max(len(x) for x in ids_list)
        input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(ids_list):
            input_ids[row, longest - len(ids):] = ids
            attention_mask[row, longest - len(ids):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device), ids_list, pad_id

    def _generate(self, batch: list[Prepared], gen_kwargs: dict) -> dict[int, tuple[str, SampleRecord]]:
        model = self.model
        images = [v for p in batch for v in p.visuals]
        modalities = [m for p in batch for m in p.modalities]
        image_sizes = [s for p in batch for s in p.image_sizes]
        questions = [p.context for p in batch for _ in p.visuals]
        kwargs = self._generation_kwargs(gen_kwargs)
        if images:  # the question text too, one per visual input, for methods that read it
            kwargs.update(images=images, modalities=modalities, image_sizes=image_sizes, questions=questions)
        encode_first = bool(images) and self._prompt_reads_visuals()
        if not encode_first:  # the prompts are final: tokenized before the clock starts, as lmms-eval's built-ins do
            input_ids, attention_mask, ids_list, pad_id = self._tokenized(batch)
        model.last_visual_stats = []
        with self._measured() as m:
            with torch.inference_mode():
                if encode_first:  # the prompts say what remains: encode, write them, then splice the same tokens
                    tokens, records = model.encode_multimodal(images, modalities, image_sizes, questions)
                    self._prompts_from_visuals(batch, records)
                    input_ids, attention_mask, ids_list, pad_id = self._tokenized(batch)
                    kwargs["visual_tokens"] = tokens
                stop = KeywordsStoppingCriteria(self._stop_words(), self.tokenizer, input_ids)
                criteria = StoppingCriteriaList([m.clock, stop])
                out = model.generate(input_ids, attention_mask=attention_mask, pad_token_id=pad_id,
                                     use_cache=self.use_cache, stopping_criteria=criteria, **kwargs)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        stats = list(model.last_visual_stats) if images else []
        results: dict[int, tuple[str, SampleRecord]] = {}
        cursor = 0
        for row, p in enumerate(batch):
            mine = stats[cursor : cursor + len(p.visuals)]
            cursor += len(p.visuals)
            generated = out[row].tolist()
            while generated and generated[-1] == pad_id:
                generated.pop()
            text_tokens = int((ids_list[row] != IMAGE_TOKEN_INDEX).sum())
            record = self._sample_record(p, mine, text_tokens=text_tokens, output_tokens=len(generated), measurement=m)
            results[p.index] = (texts[row], record)
        return results

    def _loglikelihood_one(self, context, doc_to_target, doc_to_visual, doc_id, task, split) -> tuple[float, bool]:
        doc = self.task_dict[task][split][doc_id]
        continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
        p = self._prepare(0, context, doc_to_visual(doc), {}, task, doc_id)
        if p.error is not None:
            raise ValueError(p.error)
        conv = self._new_conv()
        conv.append_message(conv.roles[0], p.question)
        conv.append_message(conv.roles[1], None)
        context_ids = tokenizer_image_token(conv.get_prompt(), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        conv.messages[-1][1] = continuation
        full_ids = tokenizer_image_token(conv.get_prompt(), self.tokenizer, IMAGE_TOKEN_INDEX,
                                         return_tensors="pt")[None]
        labels = full_ids.clone()
        labels[0, : context_ids.shape[0]] = -100
        kwargs = {"images": p.visuals, "modalities": p.modalities, "image_sizes": p.image_sizes} if p.visuals else {}
        with torch.inference_mode():
            out = self.model(input_ids=full_ids.to(self.device), labels=labels.to(self.device), **kwargs)
        # the labels of the spliced sequence: the continuation is its last (len(full) - len(context)) tokens
        n_cont = full_ids.shape[1] - context_ids.shape[0]
        logits = out.logits[0, -n_cont - 1 : -1]
        greedy = bool((logits.argmax(-1).cpu() == full_ids[0, -n_cont:]).all())
        return float(out.loss.item()), greedy

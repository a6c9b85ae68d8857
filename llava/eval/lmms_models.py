"""lmms-eval plugin models: ``aot_llava_onevision`` and ``aot_llava_vid``.

They are registered through the ``lmms_eval.models`` entry point (see :mod:`llava.eval.plugin`), so
the real lmms-eval runs them; nothing of lmms-eval is copied or patched. Frames are sampled and
prompts built as lmms-eval 0.7.3's built-in ``llava_onevision`` and ``llava_vid`` adapters do, and
every model argument of those adapters means the same here, so ``compression=none`` scores what the
built-ins score. Additions:

* ``compression=<preset | YAML path | none>`` switches AOT on for this model instance;
* batches above 1 (``--batch_size N``): prompts are left-padded after the visual tokens are spliced,
  so each sample generates what it would alone;
* ``--device cpu`` is honoured in a single process (the built-ins force ``cuda:N`` unless
  ``device_map=auto``);
* per-sample efficiency accounting (:mod:`llava.eval.efficiency`) in lmms-eval's own ``TokenCounts``
  (so in every ``--log_samples`` line), from which ``aot report`` and the table scripts build
  ``<date>_aot_efficiency.json``;
* a sample that fails (missing, corrupt or frameless video; its forward pass raising) is logged,
  counted as failed, and answered so that the task's own scoring counts it wrong
  (:mod:`llava.eval.failures`); a loglikelihood request that fails answers ``-inf``; the run goes on;
* every rank's accounting is reported once per run through lmms-eval's ``log_metrics``
  (``results["throughput"]``), see :meth:`_AOTLlavaBase.clean`.

    python -m lmms_eval --model aot_llava_onevision \\
        --model_args pretrained=lmms-lab/llava-onevision-qwen2-7b-ov,conv_template=qwen_1_5,model_name=llava_qwen,compression=paper_ov_10pct \\
        --tasks mvbench --batch_size 1 --log_samples --output_path runs/eval
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedType, InitProcessGroupKwargs
from accelerate.state import AcceleratorState
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger as eval_logger
from PIL import Image
from tqdm import tqdm
from transformers import StoppingCriteriaList

import visionzip
from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.eval import efficiency as eff
from llava.eval.failures import wrong_answer
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.video import load_video

__all__ = ["AOTLlavaOneVision", "AOTLlavaVid", "EfficiencyCounts"]


@dataclass
class EfficiencyCounts(TokenCounts):
    """lmms-eval's per-request ``TokenCounts`` plus this sample's :class:`~llava.eval.efficiency.SampleEfficiency`
    fields, which ``to_dict`` adds, so they land in the ``--log_samples`` files."""

    efficiency: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.efficiency | super().to_dict()


@dataclass
class _Prepared:
    """One request ready for ``generate``: its prompt and visual inputs, or the reason it failed."""

    index: int
    context: str
    task: str
    doc_id: Any
    doc: dict[str, Any] | None = None  # the task's document, for the answer of a failed sample
    prompt: str = ""
    visuals: list[torch.Tensor] = field(default_factory=list)  # one entry per <image> placeholder
    modalities: list[str] = field(default_factory=list)
    image_sizes: list[Any] = field(default_factory=list)
    question: str = ""  # the user turn (with its <image> placeholders), for loglikelihood
    load_ms: float = 0.0
    error: str | None = None


def _str2bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no", "none"):
        return False
    raise ValueError(f"expected a boolean (True/False), got {value!r}")


class _AOTLlavaBase(lmms):
    """What both plugin models share: loading, device placement, batching, accounting."""

    MODEL_ID = ""

    def _init_model(
        self,
        *,
        pretrained: str,
        compression: str | None,
        device: str | None,
        device_map: Any,
        batch_size: Any,
        model_name: str | None,
        attn_implementation: str | None,
        torch_dtype: str,
        customized_config: str | None,
        overwrite_config: dict[str, Any],
        conv_template: str,
        use_cache: Any,
        truncate_context: Any,
        truncation: Any,
        video_decode_backend: str,
    ) -> None:
        self.compression_name = str(compression) if compression not in (None, "") else "none"
        # an unknown preset or a bad YAML fails here, listing the presets, before any weight is read
        visionzip.load_config(self.compression_name)
        if video_decode_backend != "decord":
            raise ValueError(f"video_decode_backend={video_decode_backend!r} is not supported; expected 'decord'")
        if conv_template not in conv_templates:
            raise ValueError(f"conv_template={conv_template!r} is unknown; expected one of {sorted(conv_templates)}")
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size={batch_size!r} is not valid; expected an integer >= 1") from None
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"batch_size={batch_size!r} is not valid; expected an integer >= 1")

        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
        if accelerator.num_processes > 1:
            self._device = torch.device(f"cuda:{accelerator.local_process_index}")
            load_map: Any = {"": str(self._device)}
        else:
            self._device = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
            load_map = "auto" if device_map == "auto" else {"": str(self._device)}

        if self.compression_name != "none":
            overwrite_config = overwrite_config | {"aot_compression": self.compression_name}
        self.pretrained = pretrained
        self._tokenizer, self._model, self._image_processor, self._max_length = load_pretrained_model(
            pretrained, None, model_name or get_model_name_from_path(pretrained), device_map=load_map,
            torch_dtype=torch_dtype, attn_implementation=attn_implementation, customized_config=customized_config,
            overwrite_config=overwrite_config,
        )
        self._config = self._model.config
        self._model.eval()
        if self._tokenizer.pad_token_id is None and "qwen" in str(getattr(self._tokenizer, "name_or_path", "")).lower():
            self._tokenizer.pad_token_id = 151643
        self.conv_template = conv_template
        self.use_cache = _str2bool(use_cache)
        self.truncate_context = _str2bool(truncate_context)
        self.truncation = _str2bool(truncation)

        if accelerator.num_processes > 1:
            if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.MULTI_GPU, DistributedType.DEEPSPEED):
                raise ValueError(f"distributed type {accelerator.distributed_type} is not supported; expected DDP, FSDP or DeepSpeed")
            if accelerator.distributed_type == DistributedType.DEEPSPEED:
                AcceleratorState().deepspeed_plugin.deepspeed_config_process(
                    must_match=True, train_micro_batch_size_per_gpu=self.batch_size_per_gpu,
                    train_batch_size=self.batch_size_per_gpu * accelerator.num_processes,
                )
            if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
                self._model = accelerator.prepare(self._model)
            else:
                self._model = accelerator.prepare_model(self._model, evaluation_mode=True)
            self.accelerator = accelerator
            self._rank, self._world_size = accelerator.local_process_index, accelerator.num_processes
        else:
            self._rank, self._world_size = 0, 1
        # this run's per-sample accounting; clean() (called by lmms-eval's evaluate() on every rank when the
        # requests are answered) gathers every rank's, reports it, and starts the next run afresh
        self._records: list[dict[str, Any]] = []
        self._batch_seconds = 0.0
        self.last_run: list[dict[str, Any]] = []

    # -- lmms API properties
    @property
    def config(self):
        return self._config

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def model(self):
        return self.accelerator.unwrap_model(self._model) if hasattr(self, "accelerator") else self._model

    @property
    def eot_token_id(self):
        return self.tokenizer.eos_token_id

    @property
    def max_length(self):
        return self._max_length

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self._world_size

    def set_compression(self, spec: Any) -> None:
        """Switch the compression of the loaded model (a preset, YAML path, ``"<method>@<retention>"``
        or None / "none"): what ``aot sweep`` does between lmms-eval runs."""
        self.model.set_compression(None if spec in (None, "", "none") else spec)
        self.compression_name = "none" if spec in (None, "", "none") else str(spec)

    def clean(self) -> None:
        """lmms-eval's ``evaluate()`` calls this on every rank once a run's requests are answered, before
        it scores them. Every rank's per-sample accounting is gathered onto rank 0, which reports the run
        through lmms-eval's own ``log_metrics`` (so the run's figures, failed samples included, land in
        ``results["throughput"]`` of every entry point: the CLI's results file, ``simple_evaluate``'s
        return value, ``aot sweep``) and keeps it as :attr:`last_run`; the next run starts afresh. The
        model's modules are kept (only the cache is emptied) so that one instance can serve several runs."""
        import gc

        records, seconds = eff.gather_records(self._records, self._batch_seconds, self.world_size)
        self._records, self._batch_seconds = [], 0.0
        if self.rank == 0:
            self.last_run = records
            if records:
                log_metrics(**eff.run_metrics(records, seconds))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def records(self) -> list[dict[str, Any]]:
        """This process's per-sample accounting of the run in progress (dicts of :class:`SampleEfficiency`);
        :attr:`last_run` holds the finished run's, every rank's, on rank 0."""
        return list(self._records)

    def tok_encode(self, string: str, left_truncate_len=None, add_special_tokens=None) -> list[int]:
        encoding = self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens):
        return self.tokenizer.decode(tokens)

    # -- per model: turn one request into a prompt and visual inputs
    def _prepare(self, index: int, context: str, visual: Any, gen_kwargs: dict, task: str, doc_id: Any) -> _Prepared:
        raise NotImplementedError

    def _new_conv(self):
        template = conv_templates[self.conv_template]
        return copy.deepcopy(template) if "llama_3" in self.conv_template else template.copy()

    def _stop_words(self) -> list[str]:
        conv = conv_templates[self.conv_template]
        return [conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2]

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        raise NotImplementedError

    # -- lmms API
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        def _collate(x):
            return -len(self.tok_encode(x[0])), x[0]

        re_ords = lmms_utils.Collator([req.args for req in requests], _collate, grouping=True)
        chunks = re_ords.get_batched(n=self.batch_size, batch_fn=None)
        total = (len(requests) + self.batch_size - 1) // self.batch_size
        pbar = tqdm(total=total, disable=(self.rank != 0), desc="Model Responding")
        res: list[GenerationResult] = []
        for chunk in chunks:
            contexts, all_gen_kwargs, doc_to_visuals, doc_ids, tasks, splits = zip(*chunk)
            gen_kwargs = dict(all_gen_kwargs[0])  # the Collator grouped equal gen_kwargs together
            gen_kwargs.pop("until", None)
            prepared = []
            for i, (context, doc_to_visual, doc_id, task, split) in enumerate(zip(contexts, doc_to_visuals, doc_ids, tasks, splits)):
                doc = self.task_dict[task][split][doc_id]
                try:
                    visual = doc_to_visual(doc)
                except Exception as exc:  # noqa: BLE001 - a task's own loader failing is one failed sample
                    prepared.append(_Prepared(i, context, task, doc_id, doc, error=f"doc_to_visual failed: {type(exc).__name__}: {exc}"))
                    continue
                prepared.append(self._prepare(i, context, visual, gen_kwargs, task, doc_id))
                prepared[-1].doc = doc
            for p, out in zip(prepared, self._run_batch(prepared, gen_kwargs)):
                res.append(out)
                self.cache_hook.add_partial("generate_until", (p.context, gen_kwargs), out.text)
            pbar.update(1)
        pbar.close()
        return re_ords.get_original(res)

    def _run_batch(self, prepared: list[_Prepared], gen_kwargs: dict) -> list[GenerationResult]:
        """Generate for the prepared requests that did not fail; a batch that raises is retried one
        request at a time so that only the request at fault fails."""
        outputs: dict[int, tuple[str, eff.SampleEfficiency]] = {}
        ready = [p for p in prepared if p.error is None]
        if ready:
            try:
                outputs.update(self._generate(ready, gen_kwargs))
            except Exception as exc:  # noqa: BLE001
                if len(ready) == 1:
                    ready[0].error = f"generation failed: {type(exc).__name__}: {exc}"
                else:
                    eval_logger.warning(f"a batch of {len(ready)} failed ({type(exc).__name__}: {exc}); retrying one by one")
                    for p in ready:
                        try:
                            outputs.update(self._generate([p], gen_kwargs))
                        except Exception as exc1:  # noqa: BLE001
                            p.error = f"generation failed: {type(exc1).__name__}: {exc1}"
        results = []
        for p in prepared:
            if p.error is not None:
                text = wrong_answer(p.task, p.doc)
                eval_logger.error(f"{p.task} doc {p.doc_id}: {p.error}; the sample is answered {text!r} and scored as wrong")
                record = eff.SampleEfficiency(p.task, p.doc_id, self.compression_name, failed=True, error=p.error, load_ms=p.load_ms)
            else:
                text, record = outputs[p.index]
            self._records.append(record.to_dict())
            counts = EfficiencyCounts(input_tokens=record.input_tokens if not record.failed else None,
                                      output_tokens=record.output_tokens if not record.failed else None,
                                      efficiency=record.to_dict())
            results.append(GenerationResult(text=text, token_counts=counts))
        return results

    def _generate(self, batch: list[_Prepared], gen_kwargs: dict) -> dict[int, tuple[str, eff.SampleEfficiency]]:
        model = self.model
        ids_list = [tokenizer_image_token(p.prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt") for p in batch]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        longest = max(len(x) for x in ids_list)
        input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(ids_list):  # left padding: the prompts end together
            input_ids[row, longest - len(ids):] = ids
            attention_mask[row, longest - len(ids):] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        images = [v for p in batch for v in p.visuals]
        modalities = [m for p in batch for m in p.modalities]
        image_sizes = [s for p in batch for s in p.image_sizes]
        clock = eff.FirstTokenClock()
        criteria = StoppingCriteriaList([clock, KeywordsStoppingCriteria(self._stop_words(), self.tokenizer, input_ids)])
        kwargs = self._generation_kwargs(gen_kwargs)
        if images:
            kwargs.update(images=images, modalities=modalities, image_sizes=image_sizes)
        model.last_visual_stats = []
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids, attention_mask=attention_mask, pad_token_id=pad_id, use_cache=self.use_cache,
                                 stopping_criteria=criteria, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        end = time.perf_counter()
        ttft_ms = ((clock.first or end) - start) * 1000
        peak, kind = eff.peak_memory_mb(self.device)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        stats = list(model.last_visual_stats) if images else []
        results: dict[int, tuple[str, eff.SampleEfficiency]] = {}
        cursor = 0
        for row, p in enumerate(batch):
            mine = stats[cursor : cursor + len(p.visuals)]
            cursor += len(p.visuals)
            generated = out[row].tolist()
            while generated and generated[-1] == pad_id:
                generated.pop()
            visual = sum(s.tokens for s in mine)
            text_tokens = int((ids_list[row] != IMAGE_TOKEN_INDEX).sum())
            record = eff.SampleEfficiency(
                task=p.task, doc_id=p.doc_id, compression=self.compression_name,
                modality=mine[0].modality if mine else "text", frames=sum(s.frames for s in mine),
                visual_tokens_plain=sum(s.tokens_plain for s in mine), visual_tokens=visual,
                retention=(sum(s.retention for s in mine) / len(mine)) if mine else 1.0,
                prefill_tflops=eff.prefill_tflops(visual, model.config),
                load_ms=p.load_ms, vision_ms=sum(s.vision_ms for s in mine), compression_ms=sum(s.compression_ms for s in mine),
                ttft_ms=ttft_ms, peak_memory_mb=peak, peak_memory_kind=kind,
                input_tokens=text_tokens + visual, output_tokens=len(generated),
                stage_tokens={k: sum(s.stage_tokens.get(k, 0) for s in mine) for k in (mine[0].stage_tokens if mine else {})},
            )
            results[p.index] = (texts[row], record)
        self._batch_seconds += end - start
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Log-likelihood of each continuation given its (video) context, one request at a time. A
        request whose video cannot be loaded or whose forward pass raises fails alone: it is logged,
        counted as a failed sample, and answers ``(-inf, False)``, the least likely continuation."""
        res = []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in [req.args for req in requests]:
            try:
                res.append(self._loglikelihood_one(context, doc_to_target, doc_to_visual, doc_id, task, split))
            except Exception as exc:  # noqa: BLE001 - one bad sample fails alone, the run goes on
                error = f"{type(exc).__name__}: {exc}"
                eval_logger.error(f"{task} doc {doc_id}: {error}; the request answers log-likelihood -inf")
                self._records.append(eff.SampleEfficiency(task, doc_id, self.compression_name, failed=True,
                                                          error=error).to_dict())
                res.append((float("-inf"), False))
        return res

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
        full_ids = tokenizer_image_token(conv.get_prompt(), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
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

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            f"{self.MODEL_ID} answers single-round tasks (generate_until, loglikelihood); multi-round tasks "
            "are not supported — none of the paper's benchmarks (MVBench, EgoSchema, LongVideoBench, VideoMME) uses them"
        )


class AOTLlavaOneVision(_AOTLlavaBase):
    """LLaVA-OneVision through lmms-eval, with AOT. Arguments as lmms-eval's ``llava_onevision``,
    plus ``compression`` and ``torch_dtype``."""

    MODEL_ID = "aot_llava_onevision"

    def __init__(
        self,
        pretrained: str = "lmms-lab/llava-onevision-qwen2-7b-ov",
        compression: str = "none",
        truncation: bool = True,
        device: str | None = None,
        batch_size: int | str = 1,
        model_name: str | None = None,
        attn_implementation: str | None = "sdpa",
        device_map: str | None = None,
        conv_template: str = "qwen_1_5",
        use_cache: bool = True,
        truncate_context: bool = False,
        customized_config: str | None = None,
        max_frames_num: int = 32,
        mm_spatial_pool_stride: int = 2,
        mm_spatial_pool_mode: str = "bilinear",
        token_strategy: str = "single",
        video_decode_backend: str = "decord",
        torch_dtype: str = "float16",
        max_batch_size: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        use_flash = kwargs.pop("use_flash_attention_2", None)
        if kwargs:
            raise TypeError(f"{self.MODEL_ID}: unexpected model_args {sorted(kwargs)}")
        if _str2bool(use_flash) if use_flash is not None else False:
            attn_implementation = "flash_attention_2"
        if token_strategy != "single":
            raise ValueError(f"token_strategy={token_strategy!r} is not supported; expected 'single' (one <image> per video)")
        self.max_frames_num = int(max_frames_num)
        self.mm_spatial_pool_stride = int(mm_spatial_pool_stride)
        self.mm_spatial_pool_mode = mm_spatial_pool_mode
        self._init_model(
            pretrained=pretrained, compression=compression, device=device, device_map=device_map, batch_size=batch_size,
            model_name=model_name, attn_implementation=attn_implementation, torch_dtype=torch_dtype,
            customized_config=customized_config, conv_template=conv_template, use_cache=use_cache,
            truncate_context=truncate_context, truncation=truncation, video_decode_backend=video_decode_backend,
            overwrite_config={"mm_spatial_pool_stride": self.mm_spatial_pool_stride, "mm_spatial_pool_mode": mm_spatial_pool_mode},
        )
        self._aspect_ratio = getattr(self._config, "image_aspect_ratio", None)

    def _prepare(self, index, context, visual, gen_kwargs, task, doc_id) -> _Prepared:
        p = _Prepared(index, context, task, doc_id)
        placeholders = 0
        if self._aspect_ratio is not None:
            self._config.image_aspect_ratio = self._aspect_ratio
        if visual:
            start = time.perf_counter()
            try:
                if isinstance(visual[0], Image.Image):  # images (or frames given as images): the built-in's image path
                    if len(visual) > 1 or self._aspect_ratio is None:
                        self._config.image_aspect_ratio = gen_kwargs.get("image_aspect_ratio", "pad")
                    tensor = process_images(visual, self._image_processor, self._config)
                    per_image = list(tensor) if isinstance(tensor, list) or tensor.dim() == 5 or len(visual) > 1 else [tensor]
                    p.visuals = [t.to(dtype=torch.float16) for t in per_image]
                    p.modalities = ["image"] * len(visual)
                    p.image_sizes = [im.size for im in visual]
                    placeholders = len(visual)
                elif isinstance(visual[0], (str, os.PathLike)):
                    clip = load_video(visual[0], max_frames=self.max_frames_num, mode="uniform", num_threads=0)
                    frames = self._image_processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
                    p.visuals, p.modalities, placeholders = [frames.half()], ["video"], 1
                else:
                    p.error = f"doc_to_visual returned {type(visual[0]).__name__} items; expected video paths or PIL images"
            except Exception as exc:  # noqa: BLE001 - a missing or corrupt video fails this sample only
                p.error = f"{type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - start) * 1000
            if p.error:
                return p
        question = context
        if p.visuals and DEFAULT_IMAGE_TOKEN not in context:
            question = " ".join([DEFAULT_IMAGE_TOKEN] * placeholders) + "\n" + context
        conv = self._new_conv()
        if lmms_utils.is_json(question):  # a conversation given as JSON turns
            for i, item in enumerate(json.loads(question)):
                conv.append_message(conv.roles[i % 2], item["value"])
        else:
            conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        p.prompt, p.question = conv.get_prompt(), question
        return p

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        kwargs = {k: v for k, v in gen_kwargs.items() if k != "image_aspect_ratio"}
        kwargs.setdefault("max_new_tokens", 1024)
        if not kwargs.get("do_sample", False):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        return kwargs


class AOTLlavaVid(_AOTLlavaBase):
    """LLaVA-Video through lmms-eval, with AOT. Arguments as lmms-eval's ``llava_vid`` (1 fps
    sampling capped at ``max_frames_num``, ``force_sample``, ``add_time_instruction``), plus
    ``compression``."""

    MODEL_ID = "aot_llava_vid"

    def __init__(
        self,
        pretrained: str = "lmms-lab/LLaVA-Video-7B-Qwen2",
        compression: str = "none",
        truncation: bool = True,
        torch_dtype: str = "float16",
        device: str | None = None,
        batch_size: int | str = 1,
        attn_implementation: str | None = "sdpa",
        device_map: str | None = None,
        conv_template: str = "vicuna_v1",
        use_cache: bool = True,
        truncate_context: bool = False,
        max_frames_num: int = 20,
        video_fps: int = 1,
        mm_resampler_type: str = "spatial_pool",
        mm_spatial_pool_stride: int = 2,
        mm_spatial_pool_out_channels: int = 1024,
        mm_spatial_pool_mode: str = "average",
        mm_resampler_location: str = "before",
        mm_newline_position: str = "grid",
        overwrite: bool = True,
        video_decode_backend: str = "decord",
        delay_load: bool = False,
        tie_weights: bool = True,
        force_sample: bool = False,
        add_time_instruction: bool = False,
        add_faster_video: bool = False,
        faster_token_stride: int = 10,
        model_name: str | None = None,
        customized_config: str | None = None,
        max_batch_size: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"{self.MODEL_ID}: unexpected model_args {sorted(kwargs)}")
        if _str2bool(add_faster_video):
            raise ValueError("add_faster_video=True is not supported; expected False (LLaVA-Video's evaluation setting)")
        self.max_frames_num = int(max_frames_num)
        self.fps = int(video_fps)
        self.force_sample = _str2bool(force_sample)
        self.add_time_instruction = _str2bool(add_time_instruction)
        self.torch_dtype = torch_dtype
        overwrite_config = {}
        if _str2bool(overwrite):
            overwrite_config = {"mm_spatial_pool_stride": int(mm_spatial_pool_stride), "mm_spatial_pool_mode": mm_spatial_pool_mode,
                                "mm_pooling_position": mm_resampler_location, "mm_newline_position": mm_newline_position,
                                "delay_load": _str2bool(delay_load)}
        self._init_model(
            pretrained=pretrained, compression=compression, device=device, device_map=device_map, batch_size=batch_size,
            model_name=model_name, attn_implementation=attn_implementation, torch_dtype=torch_dtype,
            customized_config=customized_config, conv_template=conv_template, use_cache=use_cache,
            truncate_context=truncate_context, truncation=truncation, video_decode_backend=video_decode_backend,
            overwrite_config=overwrite_config,
        )
        if _str2bool(tie_weights):
            self.model.tie_weights()

    def _pixels(self, frames: Any) -> torch.Tensor:
        pixels = self._image_processor.preprocess(frames, return_tensors="pt")["pixel_values"]
        return pixels.bfloat16() if self.torch_dtype == "bfloat16" else pixels.half()

    def _prepare(self, index, context, visual, gen_kwargs, task, doc_id) -> _Prepared:
        p = _Prepared(index, context, task, doc_id)
        start = time.perf_counter()
        try:
            if not visual:
                raise ValueError("the document has no video; expected one video path")
            if isinstance(visual[0], Image.Image) or (len(visual) > 1 and isinstance(visual[0], (str, os.PathLike))):
                # frames given one by one (images or image files): sample them as lmms-eval's MVBench frame path does
                # (3 fps timestamps); the files are taken in sorted order
                frames = visual if isinstance(visual[0], Image.Image) else sorted(visual, key=str)
                idx = np.linspace(0, len(frames) - 1, self.max_frames_num, dtype=int).tolist()
                array = np.stack([np.array(frames[i].convert("RGB") if isinstance(frames[i], Image.Image)
                                           else Image.open(frames[i]).convert("RGB")) for i in idx])
                duration, times = len(frames) / 3, [i / 3 for i in idx]
            else:
                path = Path(visual[0])
                if path.is_dir():
                    files = sorted(f for f in path.iterdir() if f.is_file())
                    if len(files) < 2:
                        raise ValueError(f"frame folder {path} holds {len(files)} file(s); expected frames")
                    return self._prepare(index, context, [str(f) for f in files], gen_kwargs, task, doc_id)
                clip = load_video(path, max_frames=self.max_frames_num, mode="fps", force_sample=self.force_sample,
                                  target_fps=self.fps, num_threads=1)
                array, duration, times = clip.frames, clip.duration, clip.timestamps
            p.visuals, p.modalities, p.image_sizes = [self._pixels(array)], ["video"], []
        except Exception as exc:  # noqa: BLE001 - a missing or corrupt video fails this sample only
            p.error = f"{type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - start) * 1000
            return p
        p.load_ms = (time.perf_counter() - start) * 1000
        qs = context
        if self.add_time_instruction:
            frame_time = ",".join(f"{t:.2f}s" for t in times)
            qs = (f"The video lasts for {duration:.2f} seconds, and {len(array)} frames are uniformly sampled from it. "
                  f"These frames are located at {frame_time}.Please answer the following questions related to this video.\n{qs}")
        if getattr(self._config, "mm_use_im_start_end", False):
            qs = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + qs
        else:
            qs = DEFAULT_IMAGE_TOKEN + "\n" + qs
        conv = self._new_conv()
        conv.append_message(conv.roles[0], qs)
        conv.append_message(conv.roles[1], None)
        p.prompt, p.question = conv.get_prompt(), qs
        return p

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        temperature = gen_kwargs.get("temperature", 0) or 0
        kwargs = {"do_sample": temperature > 0, "num_beams": gen_kwargs.get("num_beams", 1),
                  "max_new_tokens": gen_kwargs.get("max_new_tokens", 1024)}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=gen_kwargs.get("top_p"))
        return kwargs

"""The model-agnostic part of the lmms-eval plugin models: :class:`AOTModelAdapter`.

It is an lmms-eval ``lmms`` subclass (a *simple* model: it takes the task's ``doc_to_visual``) and
owns everything that does not depend on the model family:

* **model_args**: lmms-eval 0.7.3 builds a simple model as ``cls(**model_args, **additional_config)``
  (``lmms.create_from_arg_string``; ``additional_config`` is ``batch_size``, ``max_batch_size`` and
  ``device``, each left out when None). The accepted keys are the parameters of the family's
  ``__init__`` (no ``**kwargs``); any other key is refused in :meth:`AOTModelAdapter.__new__`, before
  anything loads, with a ``ValueError`` that names it and lists the accepted keys.
  :data:`AOTModelAdapter.RETIRED_MODEL_ARGS` adds why a key a built-in accepts is refused here.
* **placement**: batch size, ``device`` / ``device_map``, one process or ``accelerate launch``
  (DDP, FSDP, DeepSpeed), :meth:`AOTModelAdapter._setup` then :meth:`AOTModelAdapter._adopt_model`.
* **compression**: ``compression=<preset | YAML path | method@retention | none>`` is checked before any
  weight is read and set on the loaded model with ``model.set_compression(spec)``
  (:meth:`AOTModelAdapter.set_compression`, which ``aot sweep`` also calls between runs).
* **requests**: ``generate_until`` batching (lmms-eval's ``Collator``, ``--batch_size N``), a batch that
  raises retried one request at a time; ``loglikelihood`` one request at a time.
* **failures**: a sample whose visual input cannot be loaded or whose forward pass raises is logged,
  counted as failed, and answered so that the task's own scoring counts it wrong
  (:func:`llava.eval.failures.wrong_answer`); a failed loglikelihood request answers ``-inf``; the run
  goes on.
* **efficiency**: one :class:`~llava.model.record.SampleRecord` per sample, returned in
  lmms-eval's own ``TokenCounts`` (:class:`EfficiencyCounts`, so in every ``--log_samples`` line);
  :meth:`AOTModelAdapter.clean` gathers every rank's records once per run and reports them through
  lmms-eval's ``log_metrics`` (``results["throughput"]``).

A model family (see :mod:`llava.eval.adapters`) supplies loading, turning one request into a prompt
and visual inputs (:meth:`AOTModelAdapter._prepare`), batched generation
(:meth:`AOTModelAdapter._generate`) and one loglikelihood (:meth:`AOTModelAdapter._loglikelihood_one`).
"""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import torch
from accelerate import Accelerator, DistributedType, InitProcessGroupKwargs
from accelerate.state import AcceleratorState
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger as eval_logger
from tqdm import tqdm

import visionzip
from llava.eval import efficiency as eff
from llava.eval.failures import wrong_answer
from llava.model.record import SampleRecord

__all__ = ["AOTModelAdapter", "EfficiencyCounts", "LMMS_EVAL_INJECTED_ARGS", "Measurement", "Prepared", "str2bool"]

#: What lmms-eval 0.7.3's ``simple_evaluate`` adds to the parsed ``--model_args`` (when not None):
#: ``create_from_arg_string(model_args, {"batch_size": ..., "max_batch_size": ..., "device": ...})``.
LMMS_EVAL_INJECTED_ARGS = ("batch_size", "max_batch_size", "device")


@dataclass
class EfficiencyCounts(TokenCounts):
    """lmms-eval's per-request ``TokenCounts`` plus this sample's :class:`~llava.model.record.SampleRecord`
    fields, which ``to_dict`` adds, so they land in the ``--log_samples`` files."""

    efficiency: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.efficiency | super().to_dict()


@dataclass
class Prepared:
    """One request ready for ``generate``: its prompt and visual inputs, or the reason it failed."""

    index: int
    context: str
    task: str
    doc_id: Any
    doc: dict[str, Any] | None = None  # the task's document, for the answer of a failed sample
    prompt: str = ""
    visuals: list[torch.Tensor] = field(default_factory=list)  # one entry per visual placeholder
    modalities: list[str] = field(default_factory=list)
    image_sizes: list[Any] = field(default_factory=list)
    question: str = ""  # the user turn (with its visual placeholders), for loglikelihood
    payload: dict[str, Any] = field(default_factory=dict)  # what else the family's _generate needs
    load_ms: float = 0.0
    error: str | None = None
    frames_read: int | None = None  # distinct frames of a video the adapter read (a short one is repeated)
    frame_times: list[float] | None = None  # seconds of the frames the prompt tells the model of (SampleRecord's)


@dataclass
class Measurement:
    """Wall clock and memory of one ``generate`` call (:meth:`AOTModelAdapter._measured`)."""

    clock: eff.FirstTokenClock = field(default_factory=eff.FirstTokenClock)  # a stopping criterion
    start: float = 0.0
    end: float = 0.0
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""

    @property
    def ttft_ms(self) -> float:
        return ((self.clock.first or self.end) - self.start) * 1000

    @property
    def decode_ms(self) -> float:
        return (self.end - (self.clock.first or self.end)) * 1000

    @property
    def call_ms(self) -> float:
        return (self.end - self.start) * 1000


def str2bool(value: Any) -> bool:
    """A model_args boolean: lmms-eval parses ``True``/``False`` itself; strings as YAML-ish words."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no", "none"):
        return False
    raise ValueError(f"expected a boolean (True/False), got {value!r}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class AOTModelAdapter(lmms):
    """What every plugin model shares; a model family subclasses it (see :mod:`llava.eval.adapters`)."""

    #: the lmms-eval model name (``--model``), as its family's :class:`llava.families.PluginSpec` names it
    MODEL_ID: ClassVar[str] = ""
    #: model_args keys that the lmms-eval built-in this family follows accepts but that are refused
    #: here, each with the reason the error gives
    RETIRED_MODEL_ARGS: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ model_args
    def __new__(cls, *args: Any, **kwargs: Any):
        cls.check_model_args(kwargs)
        return super().__new__(cls)

    @classmethod
    def accepted_model_args(cls) -> list[str]:
        """The accepted model_args keys: the keyword parameters of the family's ``__init__``."""
        params = inspect.signature(cls.__init__).parameters.values()
        variadic = [p.name for p in params if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if variadic:
            raise TypeError(
                f"{cls.__name__}.__init__ takes *{variadic[0]}; a plugin model must name every model_args key"
            )
        return [p.name for p in params if p.name != "self"]

    @classmethod
    def check_model_args(cls, kwargs: dict[str, Any]) -> None:
        """Refuse keys that :meth:`accepted_model_args` does not list, naming them and listing the accepted ones."""
        accepted = cls.accepted_model_args()
        unknown = [k for k in kwargs if k not in accepted]
        if not unknown:
            return
        name = cls.MODEL_ID or cls.__name__
        what = f"model_args key {unknown[0]!r} is" if len(unknown) == 1 else f"model_args keys {unknown} are"
        reasons = "; ".join(f"{k!r}: {cls.RETIRED_MODEL_ARGS[k]}" for k in unknown if k in cls.RETIRED_MODEL_ARGS)
        reasons = f" ({reasons})" if reasons else ""
        raise ValueError(f"{what} not accepted by {name}{reasons}; expected one of {sorted(accepted)}")

    # ------------------------------------------------------------------ set-up
    def _setup(self, *, compression: Any, device: str | None, device_map: Any, batch_size: Any,
               max_batch_size: Any) -> Any:
        """Check the shared arguments (before any weight is read), pick the device, and return the
        ``device_map`` to load the model with: ``"auto"`` or ``{"": device}``.

        ``device_map`` is ``None``, ``"auto"`` (spread over the GPUs; inputs go to ``device``) or one
        device (``"cuda:1"``, ``"cpu"``), which is then the device. Under ``accelerate launch`` every
        rank uses its own GPU, whatever ``device`` / ``device_map`` say."""
        if compression is None:
            compression = "none"
        if str(compression).strip() == "":
            raise ValueError("compression= is empty; expected 'none' for full tokens, a preset name, a YAML path or "
                             "'<method>@<retention>'")
        self.compression_name = str(compression)
        # an unknown preset or a bad YAML fails here, listing the presets, before any weight is read
        visionzip.load_config(self.compression_name)
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size={batch_size!r} is not valid; expected an integer >= 1") from None
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"batch_size={batch_size!r} is not valid; expected an integer >= 1")
        if max_batch_size is not None:
            raise ValueError(
                f"max_batch_size={max_batch_size!r} is not supported by {self.MODEL_ID}: it bounds lmms-eval's "
                "batch_size=auto, which these models do not do; expected --batch_size N and no --max_batch_size"
            )
        if device_map not in (None, "", "auto"):
            try:
                one = torch.device(str(device_map))
            except RuntimeError:
                raise ValueError(f"device_map={device_map!r} is not valid; expected 'auto' or one device such as "
                                 "'cuda:0' or 'cpu'") from None
            if device is not None and not _same_device(torch.device(device), one):
                raise ValueError(f"device={device!r} and device_map={device_map!r} name different devices; expected "
                                 "one of them, or the same")
            device = str(one) if device is None or one.index is not None else device

        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
        self._accelerator = accelerator
        if accelerator.num_processes > 1:
            self._device = torch.device(f"cuda:{accelerator.local_process_index}")
            return {"": str(self._device)}
        self._device = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
        return "auto" if device_map == "auto" else {"": str(self._device)}

    def _adopt_model(self, model: Any) -> None:
        """Take the loaded model: evaluation mode, this instance's compression, and the wrapping
        ``accelerate launch`` needs. Call after :meth:`_setup`, with ``self._config``,
        ``self._tokenizer`` and ``self._max_length`` set by the family."""
        model.eval()
        self._model = model
        self.set_compression(self.compression_name)
        self._check_budget()
        accelerator = self._accelerator
        del self._accelerator
        if accelerator.num_processes > 1:
            supported = (DistributedType.FSDP, DistributedType.MULTI_GPU, DistributedType.DEEPSPEED)
            if accelerator.distributed_type not in supported:
                raise ValueError(f"distributed type {accelerator.distributed_type} is not supported; expected DDP, "
                                 "FSDP or DeepSpeed")
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

    # ------------------------------------------------------------------ lmms API properties
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

    # ------------------------------------------------------------------ compression and accounting
    def set_compression(self, spec: Any) -> None:
        """Switch the compression of the loaded model (a preset, YAML path, ``"<method>@<retention>"``
        or None / "none"): what ``aot sweep`` does between lmms-eval runs."""
        off = spec in (None, "", "none")
        self.model.set_compression(None if off else spec)
        self.compression_name = "none" if off else str(spec)

    def clean(self) -> None:
        """lmms-eval's ``evaluate()`` calls this on every rank once a run's requests are answered, before
        it scores them. Every rank's per-sample accounting is gathered onto rank 0, which reports the run
        through lmms-eval's own ``log_metrics`` (so the run's figures, failed samples included, land in
        ``results["throughput"]`` of every entry point: the CLI's results file, ``simple_evaluate``'s
        return value, ``aot sweep``) and keeps it as :attr:`last_run`; the next run starts afresh. The
        model's modules are kept (only the cache is emptied) so that one instance can serve several runs."""
        records, seconds = eff.gather_records(self._records, self._batch_seconds, self.world_size)
        self._records, self._batch_seconds = [], 0.0
        if self.rank == 0:
            self.last_run = records
            if records:
                log_metrics(**eff.run_metrics(records, seconds))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _planned_layout(self) -> Any:
        """The loaded model's token layout of this run's videos when it is known before any video is read
        (a family with a fixed grid and frame count returns its ``VideoLayout``); None when it depends on
        the video."""
        return None

    def _check_budget(self, layout: Any = None, cfg: Any = None) -> None:
        """Compress one synthetic video of ``layout`` (default: :meth:`_planned_layout`) with ``cfg``
        (default: the loaded model's compression), so that a budget the layout cannot meet (fewer than
        one token per frame, more anchors than tokens) fails at start-up, naming the setting, instead of
        failing every sample. Families call it before the weights load too, with the layout their
        checkpoint's ``config.json`` describes."""
        layout = self._planned_layout() if layout is None else layout
        cfg = getattr(self.model, "compression", None) if cfg is None else cfg
        if layout is None or cfg is None:
            return
        layout = layout.with_newline(None)
        generator = torch.Generator().manual_seed(0)
        shape = (layout.frames, layout.tokens_per_frame)
        features = torch.randn(*shape, 8, generator=generator)
        scores = torch.rand(*shape, generator=generator)
        try:
            visionzip.compress_video(features, scores, scores.clone(), config=cfg, layout=layout)
        except ValueError as err:
            raise ValueError(f"compression={self.compression_name!r} cannot run on this model's {layout.frames}-frame "
                             f"{layout.grid[0]}x{layout.grid[1]} layout: {err}") from None

    @staticmethod
    def _check_frames(name: str, value: Any) -> int:
        """``value`` as a frame count, or a ValueError naming ``name`` when it is not an integer >= 1."""
        try:
            frames = int(value)
        except (TypeError, ValueError):
            frames = 0
        if isinstance(value, bool) or frames < 1 or str(value).strip() not in (str(frames), f"{frames}.0"):
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1 (frames sampled per video)")
        return frames

    def adopt_records(self, records: list[dict[str, Any]]) -> None:
        """Count the per-sample records of answers served from a response cache
        (:class:`llava.eval.lmms.SampleResponseCache`) in this run's accounting, as if answered now."""
        self._records.extend(dict(r) for r in records)

    @property
    def records(self) -> list[dict[str, Any]]:
        """This process's per-sample accounting of the run in progress (dicts of :class:`SampleRecord`);
        :attr:`last_run` holds the finished run's, every rank's, on rank 0."""
        return list(self._records)

    @contextmanager
    def _measured(self) -> Iterator[Measurement]:
        """Time one ``generate`` call (give it ``measurement.clock`` as a stopping criterion for the
        first token) and read its peak memory; the call's seconds count towards the run's throughput."""
        m = Measurement()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        m.start = time.perf_counter()
        yield m
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        m.end = time.perf_counter()
        m.peak_memory_mb, m.peak_memory_kind = eff.peak_memory_mb(self.device)
        self._batch_seconds += m.end - m.start

    def _sample_record(self, p: Prepared, visual: list[SampleRecord], *, text_tokens: int, output_tokens: int,
                       measurement: Measurement) -> SampleRecord:
        """One generated sample's record, from the seam's records of its visual inputs (the model's
        ``last_visual_stats`` entries of this sample) and what the call cost."""
        tokens = sum(r.visual_tokens for r in visual)
        return SampleRecord.of_sample(
            visual, task=p.task, doc_id=p.doc_id, compression=self.compression_name,
            prefill_tflops=eff.prefill_tflops(tokens, self.model.config), load_ms=p.load_ms,
            ttft_ms=measurement.ttft_ms, decode_ms=measurement.decode_ms,
            decode_ms_per_token=measurement.clock.ms_per_step, e2e_ms=p.load_ms + measurement.call_ms,
            peak_memory_mb=measurement.peak_memory_mb,
            peak_memory_kind=measurement.peak_memory_kind, input_tokens=text_tokens + tokens,
            output_tokens=output_tokens, frame_times=p.frame_times,
            **({} if p.frames_read is None else {"frames": p.frames_read}),
        )

    def tok_encode(self, string: str, left_truncate_len=None, add_special_tokens=None) -> list[int]:
        encoding = self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens):
        return self.tokenizer.decode(tokens)

    # ------------------------------------------------------------------ per family
    def _prepare(self, index: int, context: str, visual: Any, gen_kwargs: dict, task: str, doc_id: Any) -> Prepared:
        """Turn one request into a prompt and visual inputs; a visual input that cannot be loaded sets
        ``error`` (the sample fails alone) instead of raising."""
        raise NotImplementedError

    def _generate(self, batch: list[Prepared], gen_kwargs: dict) -> dict[int, tuple[str, SampleRecord]]:
        """Generate for a batch of prepared requests: ``{prepared.index: (answer, accounting)}``. May raise
        (the batch is then retried one request at a time)."""
        raise NotImplementedError

    def _loglikelihood_one(self, context, doc_to_target, doc_to_visual, doc_id, task, split) -> tuple[float, bool]:
        """``(log-likelihood of the continuation, whether it is the greedy one)`` of one request. May raise
        (the request then fails alone)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lmms API
    def _request_fields(self, args: tuple) -> tuple[str, dict, Any, Any, str, str]:
        """``(context, gen_kwargs, to_visual, doc_id, task, split)`` of one ``generate_until`` request.
        A simple model's request carries the task's ``doc_to_visual``; a chat model's (``is_simple =
        False``) carries ``doc_to_messages`` in its place, after ``gen_kwargs``, which ``_prepare``
        then receives as the document's messages."""
        if getattr(self, "is_simple", True):
            context, gen_kwargs, to_visual, doc_id, task, split = args
        else:
            context, to_visual, gen_kwargs, doc_id, task, split = args
        return context, gen_kwargs, to_visual, doc_id, task, split

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        fields = [self._request_fields(req.args) for req in requests]

        def _collate(x):
            return -len(self.tok_encode(x[0])), x[0]

        # grouped by gen_kwargs (one generate call per batch), longest prompt first
        re_ords = lmms_utils.Collator(fields, _collate, group_fn=lambda x: x[1], grouping=True)
        chunks = re_ords.get_batched(n=self.batch_size, batch_fn=None)
        total = (len(requests) + self.batch_size - 1) // self.batch_size
        pbar = tqdm(total=total, disable=(self.rank != 0), desc="Model Responding")
        res: list[GenerationResult] = []
        for chunk in chunks:
            contexts, all_gen_kwargs, doc_to_visuals, doc_ids, tasks, splits = zip(*chunk)
            gen_kwargs = dict(all_gen_kwargs[0])  # the Collator grouped equal gen_kwargs together
            gen_kwargs.pop("until", None)
            prepared = []
            for i, (context, doc_to_visual, doc_id, task, split) in enumerate(
                zip(contexts, doc_to_visuals, doc_ids, tasks, splits)
            ):
                doc = self.task_dict[task][split][doc_id]
                try:
                    visual = doc_to_visual(doc)
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - a task's own loader failing (some call
                    # sys.exit on a missing video, lmms-eval's Charades-STA loader among them) is one failed sample
                    hook = "doc_to_visual" if getattr(self, "is_simple", True) else "doc_to_messages"
                    error = f"{hook} failed: {type(exc).__name__}: {exc}"
                    prepared.append(Prepared(i, context, task, doc_id, doc, error=error))
                    continue
                prepared.append(self._prepare(i, context, visual, gen_kwargs, task, doc_id))
                prepared[-1].doc = doc
            for p, out in zip(prepared, self._run_batch(prepared, gen_kwargs)):
                res.append(out)
                self.cache_hook.add_partial("generate_until", (p.context, gen_kwargs), out.text)
            pbar.update(1)
        pbar.close()
        return re_ords.get_original(res)

    def _run_batch(self, prepared: list[Prepared], gen_kwargs: dict) -> list[GenerationResult]:
        """Generate for the prepared requests that did not fail; a batch that raises is retried one
        request at a time so that only the request at fault fails."""
        outputs: dict[int, tuple[str, SampleRecord]] = {}
        ready = [p for p in prepared if p.error is None]
        if ready:
            try:
                outputs.update(self._generate(ready, gen_kwargs))
            except Exception as exc:  # noqa: BLE001
                if len(ready) == 1:
                    ready[0].error = f"generation failed: {type(exc).__name__}: {exc}"
                else:
                    eval_logger.warning(
                        f"a batch of {len(ready)} failed ({type(exc).__name__}: {exc}); retrying one by one"
                    )
                    for p in ready:
                        try:
                            outputs.update(self._generate([p], gen_kwargs))
                        except Exception as exc1:  # noqa: BLE001
                            p.error = f"generation failed: {type(exc1).__name__}: {exc1}"
        results = []
        for p in prepared:
            if p.error is not None:
                text = wrong_answer(p.task, p.doc)
                eval_logger.error(
                    f"{p.task} doc {p.doc_id}: {p.error}; the sample is answered {text!r} and scored as wrong"
                )
                record = SampleRecord(task=p.task, doc_id=p.doc_id, compression=self.compression_name, failed=True,
                                      error=p.error, load_ms=p.load_ms, retention=None)
            else:
                text, record = outputs[p.index]
            self._records.append(record.to_dict())
            counts = EfficiencyCounts(input_tokens=record.input_tokens if not record.failed else None,
                                      output_tokens=record.output_tokens if not record.failed else None,
                                      efficiency=record.to_dict())
            results.append(GenerationResult(text=text, token_counts=counts))
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
                self._records.append(SampleRecord(task=task, doc_id=doc_id, compression=self.compression_name,
                                                  failed=True, error=error, retention=None).to_dict())
                res.append((float("-inf"), False))
        return res

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            f"{self.MODEL_ID} answers single-round tasks (generate_until, loglikelihood); multi-round tasks "
            "are not supported — none of the paper's benchmarks (MVBench, EgoSchema, LongVideoBench, VideoMME) "
            "uses them"
        )

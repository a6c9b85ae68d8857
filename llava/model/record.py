"""One sample's accounting (:class:`SampleRecord`) and the spans that time the visual path.

Every model seam (:mod:`llava.model.seam`, called by :mod:`llava.model.llava_arch` for LLaVA-NeXT and by
:mod:`llava.model.qwen_vl.common` for Qwen2.5-VL / Qwen3-VL) reports one :class:`SampleRecord` per visual
input in ``last_visual_stats``, with the visual fields filled. The callers (the lmms-eval plugins of
:mod:`llava.eval.adapters`, ``aot infer``) complete it with what the call around the model cost, and
write :meth:`SampleRecord.to_dict` (the ``--log_samples`` lines, the run summaries, ``aot infer --json``).

Fields (:mod:`llava.eval.efficiency` defines the figures):

* the caller's: ``task``, ``doc_id``, ``compression``, ``failed``, ``error``, ``prefill_tflops``,
  ``load_ms``, ``ttft_ms``, ``prefill_ms``, ``decode_ms``, ``decode_ms_per_token``, ``e2e_ms``,
  ``peak_memory_mb``, ``peak_memory_kind``,
  ``input_tokens``, ``output_tokens`` (generated tokens), ``frame_times`` (seconds of the sampled frames the
  prompt's time text lists: LLaVA-Video's time instruction, the frames that keep a token, a token merged
  across frames counting for its anchor's frame; None where the plugin writes no time text: Qwen-VL's
  times are in its positions and its processor's timestamp text, docs/reproduce.md);
* the seam's: ``modality``, ``frames_sampled`` (the frames the model encoded, repeats included),
  ``frames`` (the same, until a caller that read the video sets the distinct frames it read,
  :attr:`llava.video.VideoClip.frames_read`, as ``aot infer`` does), ``visual_tokens_plain`` (what the model splices
  without compression, newlines included), ``visual_tokens`` (what it splices), ``stage_tokens``,
  ``retention``, ``vision_ms`` / ``compression_ms`` (read from the spans, per sample of the batch that
  shared them; None where timing was off: in training unless ``model.time_visual = True``), and
  ``result``, the method's :class:`visionzip.CompressionResult` (None without compression; never written).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import visionzip

__all__ = ["CudaSpan", "HostSpan", "SampleRecord", "SpanShare", "timing_span"]


class HostSpan:
    """Wall time of a CPU section (no device work to wait for)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._ms: float | None = None

    def stop(self) -> HostSpan:
        self._ms = (time.perf_counter() - self._start) * 1000
        return self

    @property
    def ms(self) -> float:
        return 0.0 if self._ms is None else self._ms


class CudaSpan:
    """A CUDA section timed with events: recording never waits; the time is read after the fact
    (the first read waits for the end event, by then long done)."""

    def __init__(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._start.record()

    def stop(self) -> CudaSpan:
        self._end.record()
        return self

    @property
    def ms(self) -> float:
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def timing_span(enabled: bool, cuda: bool) -> HostSpan | CudaSpan | None:
    """A span started now (CUDA events on a GPU, wall time otherwise), or None when timing is off."""
    if not enabled:
        return None
    return CudaSpan() if cuda else HostSpan()


class SpanShare:
    """The summed time of ``spans`` (None entries count 0; no spans: 0 ms) divided by ``shared_by``, read
    when asked (a CUDA span is read after the fact)."""

    def __init__(self, spans: Sequence[Any], shared_by: int = 1) -> None:
        if isinstance(shared_by, bool) or not isinstance(shared_by, int) or shared_by < 1:
            raise ValueError(f"shared_by={shared_by!r} is not valid; expected an integer >= 1")
        self._spans, self._shared_by = list(spans), shared_by

    @property
    def ms(self) -> float:
        return sum(s.ms for s in self._spans if s is not None) / self._shared_by


#: the fields :meth:`SampleRecord.to_dict` writes, in order
RECORD_FIELDS = (
    "task", "doc_id", "compression", "failed", "error", "modality", "frames", "frames_sampled",
    "visual_tokens_plain", "visual_tokens", "retention", "prefill_tflops", "load_ms", "vision_ms", "compression_ms",
    "ttft_ms", "prefill_ms", "decode_ms", "decode_ms_per_token", "e2e_ms", "peak_memory_mb", "peak_memory_kind",
    "input_tokens", "output_tokens", "stage_tokens", "frame_times",
)


@dataclass
class SampleRecord:
    """What one sample (or one visual input of it) cost; see the module docstring for who fills what."""

    task: str = ""
    doc_id: Any = None
    compression: str = "none"
    failed: bool = False
    error: str | None = None
    modality: str = "video"
    frames: int = 0  # distinct frames read where the caller knows them, else frames_sampled
    frames_sampled: int = 0  # frames the model encoded, repeats included
    visual_tokens_plain: int = 0
    visual_tokens: int = 0
    retention: float = 1.0
    prefill_tflops: float = 0.0
    load_ms: float = 0.0
    ttft_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    decode_ms_per_token: float = 0.0
    e2e_ms: float = 0.0
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    stage_tokens: dict[str, int] = field(default_factory=dict)
    frame_times: list[float] | None = None
    #: what ``vision_ms`` / ``compression_ms`` read (anything with ``.ms``); None: not timed
    vision_span: Any = field(default=None, repr=False, compare=False)
    compression_span: Any = field(default=None, repr=False, compare=False)
    result: visionzip.CompressionResult | None = field(default=None, repr=False, compare=False)

    @property
    def vision_ms(self) -> float | None:
        """Vision tower (+ projector / merger) per sample of its batch; None where not timed."""
        return None if self.vision_span is None else self.vision_span.ms

    @property
    def compression_ms(self) -> float | None:
        """The compression per compressed sample of its batch (0.0 without compression); None where not timed."""
        return None if self.compression_span is None else self.compression_span.ms

    @classmethod
    def of_sample(cls, parts: Sequence[SampleRecord], **fields: Any) -> SampleRecord:
        """One sample's record from the seam's records of its visual inputs (``parts``, none for a text-only
        sample) and the caller's ``fields``: frames, tokens, stage counts and times summed, retention
        averaged; the compression result kept where the sample has one visual input."""
        first = parts[0] if parts else None
        visual = cls(
            modality=first.modality if first else "text", frames=sum(p.frames for p in parts),
            frames_sampled=sum(p.frames_sampled for p in parts),
            visual_tokens_plain=sum(p.visual_tokens_plain for p in parts),
            visual_tokens=sum(p.visual_tokens for p in parts),
            retention=sum(p.retention for p in parts) / len(parts) if parts else 1.0,
            stage_tokens={k: sum(p.stage_tokens.get(k, 0) for p in parts)
                          for k in (first.stage_tokens if first else {})},
            vision_span=SpanShare([p.vision_span for p in parts]),
            compression_span=SpanShare([p.compression_span for p in parts]),
            result=first.result if len(parts) == 1 and first is not None else None,
        )
        return replace(visual, **fields)

    def completed(self, **fields: Any) -> SampleRecord:
        """A copy with the caller's ``fields`` set."""
        return replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (:data:`RECORD_FIELDS`); times that were not taken are written as 0.0."""
        out = {name: getattr(self, name) for name in RECORD_FIELDS}
        out["vision_ms"] = out["vision_ms"] or 0.0
        out["compression_ms"] = out["compression_ms"] or 0.0
        out["stage_tokens"] = dict(self.stage_tokens)
        out["frame_times"] = None if self.frame_times is None else [float(t) for t in self.frame_times]
        return out

    @property
    def kept_frames(self) -> list[int] | None:
        """The layout frames (sampled frames; temporal patches on Qwen-VL) that keep at least one visual
        token, ascending, read from the plan's provenance (a merged token counts for its anchor's frame;
        newline tokens are not visual); None without a compression result (then every frame is kept)."""
        if self.result is None or self.result.plan is None:
            return None
        plan = self.result.plan
        return sorted(set(plan.positions[~plan.is_newline, 0].tolist()))

"""What the visual path of a model did for one sample (:class:`VisualStats`) and the spans that time it.

Every model seam (:mod:`llava.model.llava_arch` for LLaVA-NeXT, :mod:`llava.model.qwen_vl.qwen2_5_vl` for
Qwen2.5-VL) reports one :class:`VisualStats` per visual input in ``last_visual_stats``; the lmms-eval
plugins and ``aot infer`` read them for the efficiency accounting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

import visionzip

__all__ = ["CudaSpan", "HostSpan", "VisualStats", "timing_span"]


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


@dataclass
class VisualStats:
    """What the visual path did for one sample (runtime values, never written into the config).
    ``vision_ms`` / ``compression_ms``: per sample of its batch; None where timing was off (in
    training unless ``model.time_visual = True``)."""

    modality: str
    frames: int
    tokens_plain: int  # tokens LLaVA-NeXT would splice without compression
    tokens: int  # tokens actually spliced
    stage_tokens: dict[str, int] = field(default_factory=dict)
    retention: float = 1.0
    vision_span: Any = field(default=None, repr=False)
    compression_span: Any = field(default=None, repr=False)
    per_sample: int = 1  # samples that shared the spans
    per_compressed: int = 1
    result: visionzip.CompressionResult | None = None  # masks, counts and plan of the method, when it ran

    @property
    def vision_ms(self) -> float | None:
        return None if self.vision_span is None else self.vision_span.ms / self.per_sample

    @property
    def compression_ms(self) -> float | None:
        if self.compression_span is None:
            return None if self.vision_span is None or self.result is not None else 0.0
        return self.compression_span.ms / self.per_compressed

"""What every family's ``aot infer`` runner shares: the options it takes, the per-sample record it
returns (:class:`llava.model.record.SampleRecord`, the one record of every entry point), the stats
table, the checkpoint's ``model_type`` and the timing around ``generate``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the record's module loads the model stack
    from llava.model.record import SampleRecord


@dataclass(frozen=True)
class InferOptions:
    """The ``aot infer`` options a family's runner reads; each family reads the ones that apply to it
    (``conv_template`` the LLaVA-NeXT families, ``max_pixels`` the Qwen-VL ones).

    ``compression`` is what the model runs with, whatever the checkpoint's ``config.json`` says: a preset,
    YAML path, ``"<method>@<retention>"``, a visionzip config object, or ``"none"`` (full tokens).
    ``compression_name`` is what the record calls it (default: ``compression`` as text)."""

    compression: Any = "none"
    device: str = "auto"
    dtype: str = "bfloat16"
    attn_implementation: str | None = "sdpa"
    max_new_tokens: int = 16
    max_frames: int = 32
    conv_template: str = "qwen_1_5"
    max_pixels: int | None = None
    compression_name: str | None = None

    @property
    def compressed(self) -> bool:
        return self.compression is not None and not (isinstance(self.compression, str)
                                                     and self.compression.lower() in ("none", "off", ""))

    @property
    def name(self) -> str:
        """The compression as the record names it."""
        if self.compression_name is not None:
            return self.compression_name
        return str(self.compression) if self.compressed else "none"

    @property
    def device_map(self) -> Any:
        return "auto" if self.device == "auto" else {"": self.device}


def checkpoint_model_type(model: str) -> str | None:
    """The ``model_type`` of a checkpoint folder's ``config.json`` or a hub id's config (None when unreadable)."""
    config = Path(model) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type")
    try:  # a hub id: its config, when it can be read
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model).model_type
    except Exception:  # noqa: BLE001 - the family's loader reports what it cannot find
        return None


def timed_generate(model: Any, generate: Callable[[Any], Any]) -> tuple[Any, float, float, float]:
    """Run ``generate(clock)`` (``clock``: a :class:`llava.eval.efficiency.FirstTokenClock` to pass as a
    stopping criterion) on ``model``'s device. Returns (output, start, first token, end) in
    ``time.perf_counter`` seconds; the peak-memory counter is reset first on CUDA."""
    import torch

    from llava.eval.efficiency import FirstTokenClock

    clock = FirstTokenClock()
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    start = time.perf_counter()
    out = generate(clock)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    return out, start, clock.first or end, end


def infer_stats(visual: SampleRecord, model: Any, compression: str, new_tokens: int, start: float, first: float,
                end: float, *, frames_read: int | None = None) -> SampleRecord:
    """The seam's record of the video (``visual``) completed with what the ``generate`` call around it
    cost (the times of :func:`timed_generate`): prefill is the time to the first token less vision and
    compression. ``frames_read`` (the clip's distinct frames) replaces ``frames``; ``frames_sampled``
    keeps what the model encoded."""
    from llava.eval.efficiency import peak_memory_mb, prefill_tflops

    peak, kind = peak_memory_mb(model.device)
    visual_ms = (visual.vision_ms or 0.0) + (visual.compression_ms or 0.0)
    return visual.completed(
        frames=visual.frames if frames_read is None else int(frames_read), compression=compression,
        prefill_tflops=prefill_tflops(visual.visual_tokens, model.config),
        ttft_ms=(first - start) * 1000, prefill_ms=(first - start) * 1000 - visual_ms,
        decode_ms=(end - first) * 1000, decode_ms_per_token=(end - first) * 1000 / max(int(new_tokens) - 1, 1),
        e2e_ms=(end - start) * 1000, output_tokens=int(new_tokens), peak_memory_mb=peak,
        peak_memory_kind=kind,
    )


_STAGE_LABELS = {"input": "  input (frames x tokens per frame)", "anchors": "  anchors after intra-frame OT",
                 "pooled": "  cells kept (after the model's pooling, if any)", "newlines": "  newline tokens",
                 "output": "  after inter-frame OT"}


def format_stats(stats: SampleRecord) -> str:
    """The record as a two-column Markdown table."""
    rows: list[tuple[str, Any]] = [("compression", stats.compression), ("frames read", stats.frames),
                                   ("frames sampled (repeats included)", stats.frames_sampled),
                                   ("visual tokens without compression", stats.visual_tokens_plain)]
    for stage, count in stats.stage_tokens.items():
        rows.append((_STAGE_LABELS.get(stage, f"  {stage}"), count))
    rows += [("visual tokens into the LLM", stats.visual_tokens),
             ("retention (paper definition)", f"{stats.retention:.4f}"),
             ("prefill TFLOPs (visual tokens)", f"{stats.prefill_tflops:.6f}"),
             ("vision ms", f"{stats.vision_ms or 0.0:.1f}"), ("compression ms", f"{stats.compression_ms or 0.0:.1f}"),
             ("prefill ms", f"{stats.prefill_ms:.1f}"),
             ("decode ms", f"{stats.decode_ms:.1f} ({stats.output_tokens} tokens)"),
             ("decode ms per token (after the first)", f"{stats.decode_ms_per_token:.2f}"),
             ("end to end ms (generate: vision to last token)", f"{stats.e2e_ms:.1f}"),
             (f"peak memory MB ({stats.peak_memory_kind})", f"{stats.peak_memory_mb:.0f}")]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)

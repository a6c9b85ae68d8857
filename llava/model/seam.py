"""The one compression seam every model family calls: :class:`VisualSeam`.

A family runs its vision tower (capturing, where the method reads them, the attention scores of the
layers :attr:`VisualSeam.score_roles` names) inside :meth:`VisualSeam.vision` and hands the seam each
video's features, score maps and :class:`visionzip.VideoLayout`. :meth:`VisualSeam.videos` reduces
them with :func:`visionzip.compress_video`: with the model's compression config, or without one with
visionzip's ``full`` method, the model's own uncompressed sequence (pooling and newlines as the layout
says). It returns, per video, the tokens in the order the LLM sees them, the reduction applied (whose
plan gives every token's provenance and grid position, for the family's splice) and the
:class:`~llava.model.record.SampleRecord` with the visual fields filled.

Nothing here depends on which method or which family it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import visionzip
from llava.model.record import SampleRecord, SpanShare, timing_span

__all__ = ["SeamVideo", "VisualSeam", "uncompressed_record"]

#: what runs without a compression config: the model's uncompressed sequence
FULL = visionzip.FullConfig()


@dataclass
class SeamVideo:
    """One video after the seam.

    tokens: (T, D) in the order the LLM sees them
    levels: one (T, D') tensor per extra feature level handed in (Qwen3-VL's deepstack), reduced with
            the tokens' plan
    result: the reduction applied (the ``full`` method's without compression): ``result.plan`` gives
            each token's provenance and position
    record: the visual part of the video's :class:`~llava.model.record.SampleRecord`
    """

    tokens: torch.Tensor
    result: visionzip.CompressionResult
    record: SampleRecord
    levels: list[torch.Tensor] = field(default_factory=list)


def _stage_tokens(layout: visionzip.VideoLayout) -> dict[str, int]:
    """What the ``full`` method counts for a video of ``layout``."""
    return {"input": layout.frames * layout.tokens_per_frame, "pooled": layout.num_cells,
            "newlines": layout.num_newlines, "output": layout.num_tokens}


def uncompressed_record(layout: visionzip.VideoLayout) -> SampleRecord:
    """The record of a video the model splices without compression, from its layout alone (as
    :meth:`VisualSeam.videos` fills it without a config, untimed)."""
    n = layout.num_tokens
    frames = layout.frames * layout.temporal_patch
    return SampleRecord(modality="video", frames=frames, frames_sampled=frames, visual_tokens_plain=n,
                        visual_tokens=n, stage_tokens=_stage_tokens(layout), retention=1.0)


class VisualSeam:
    """One batch of a model's visual inputs through the seam.

    ``config``: the model's compression config (None: none); ``timed``: time the vision tower and the
    compression (CUDA events when ``cuda``, wall time otherwise); ``samples``: how many visual inputs
    the vision tower runs for (its time is shared among them)."""

    def __init__(self, config: object | None, *, timed: bool, cuda: bool, samples: int) -> None:
        self.config = config
        self.spec = None if config is None else visionzip.registry.method_of(config)
        self.timed, self.cuda, self.samples = bool(timed), bool(cuda), int(samples)
        self._vision: object | None = None

    @property
    def score_roles(self) -> tuple[str, ...]:
        """The score maps the method reads (``"shallow"``, ``"deep"``); none without compression."""
        return () if self.spec is None else tuple(self.spec.score_roles)

    def score_layers(self) -> tuple[int, int]:
        """``(shallow, deep)`` layers of the config, for a tower that captures by config."""
        assert self.spec is not None
        return self.spec.score_layers(self.config)

    @contextmanager
    def vision(self) -> Iterator[None]:
        """Time the vision tower (and projector / merger) run inside the block."""
        span = timing_span(self.timed, self.cuda)
        yield
        if span is not None:
            span.stop()
        self._vision = span

    def _vision_share(self) -> SpanShare | None:
        return None if self._vision is None else SpanShare([self._vision], self.samples)

    def videos(
        self,
        features: Sequence[torch.Tensor],
        scores: Mapping[str, Sequence[torch.Tensor]],
        layouts: Sequence[visionzip.VideoLayout],
        *,
        questions: Sequence[str | None] | None = None,
        levels: Sequence[Sequence[torch.Tensor]] = (),
    ) -> list[SeamVideo]:
        """Reduce every video. ``features``: (F, N, D) per video; ``scores``: per role of
        :attr:`score_roles`, (F, N) per video; ``layouts``: the model's layout per video;
        ``questions``: one text per video, read by a method that reads the question; ``levels``: per
        extra feature level, (F, N, D') per video, reduced as the features are."""
        count = len(layouts)
        compressing = self.config is not None
        question = None
        if self.spec is not None and self.spec.reads_question and questions is not None:
            if len(questions) != count:
                raise ValueError(f"questions: {len(questions)} given for {count} videos; expected one per video")
            question = list(questions)
        span = timing_span(self.timed and compressing, self.cuda)
        results = visionzip.compress_video(
            list(features), scores.get("shallow"), scores.get("deep"), config=self.config if compressing else FULL,
            layout=list(layouts), question=question,
        )
        reduced = [[r.plan.apply(level[v]) for level in levels] for v, r in enumerate(results)]
        if span is not None:
            span.stop()
        compression = None
        if self.timed:
            compression = SpanShare([span], count) if compressing else SpanShare([])
        out = []
        for lay, res, lvl in zip(layouts, results, reduced):
            frames = lay.frames * lay.temporal_patch
            record = SampleRecord(
                modality="video", frames=frames, frames_sampled=frames, visual_tokens_plain=lay.num_tokens,
                visual_tokens=res.num_tokens, stage_tokens=dict(res.stage_tokens), retention=float(res.retention),
                vision_span=self._vision_share(), compression_span=compression, result=res if compressing else None,
            )
            out.append(SeamVideo(res.tokens, res, record, lvl))
        return out

    def image_record(self, tokens: int) -> SampleRecord:
        """The record of an image the model spliced as ``tokens`` tokens (never compressed)."""
        return SampleRecord(modality="image", frames=1, frames_sampled=1, visual_tokens_plain=tokens,
                            visual_tokens=tokens, vision_span=self._vision_share(),
                            compression_span=SpanShare([]) if self.timed else None)

"""What every baseline shares: the config fields they have in common with AOT, the
:class:`Selection` a select function returns, and :func:`compress_on_grid`, which turns a select
function on the model's pooled grid into a registered method's ``compress``.

Tokens go to the LLM in frame order, row-major within a frame, with the newlines the model's
layout places (after every row of every frame for ``grid``, newline positions always emitted; one
after the video for ``one_token`` where the model has a newline, unless ``one_token_newline="paper"``
drops it as AOT's release does). A merged token is emitted at the grid position of the token it was
merged into.

A ``select`` function takes one video's pooled tokens ``(F, n, D)`` and returns a :class:`Selection`:
``kept (F, n)`` (positions emitted), ``merged (F, n)`` (positions folded into an emitted token),
``target`` (the emitted position each position's value is averaged into) and extra stage counts;
positions in neither mask were dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .._checks import check_choice
from ..budget import even_split
from ..config import (
    _ENUM_FIELDS,
    AOTConfig,
    MethodConfig,
    NewlinePosition,
    OneTokenNewline,
    PoolMode,
    _check_int,
    _is_real,
)
from ..inputs import VideoInput
from ..layout import VideoLayout, append_newline, newline_mask, newline_values, pool_tokens, sequence_positions
from ..plan import CompressionResult, ReductionPlan, Stage, emit_positions


def check_retention(value: Any) -> None:
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"retention={value!r} is not valid; expected a target retention in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class BaselineConfig(MethodConfig):
    """Fields every baseline shares with :class:`~visionzip.AOTConfig` (same meaning, defaults read
    from it): layout overrides for the pure-tensor API (None: the model's layout), and the vision
    layers whose attention scores a method reads. ``one_token_newline``: None or ``append`` emit the
    layout's trailing newline as the model does, ``paper`` drops it as AOT's release does. A subclass
    with a ``retention`` field has it validated here."""

    pool_mode: PoolMode | None = None
    pool_stride: int | None = None
    newline_position: NewlinePosition | None = None
    one_token_newline: OneTokenNewline | None = None
    shallow_layer: int = AOTConfig.shallow_layer
    deep_layer: int = AOTConfig.deep_layer

    def __post_init__(self) -> None:
        for name in ("pool_mode", "newline_position", "one_token_newline"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_choice(name, getattr(self, name), _ENUM_FIELDS[name]))
        if self.pool_stride is not None:
            _check_int("pool_stride", self.pool_stride, 1)
        for name in ("shallow_layer", "deep_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}={value!r} is not valid; expected an integer layer index")
        if "retention" in {f.name for f in fields(self)}:
            check_retention(self.retention)  # type: ignore[attr-defined]


@dataclass
class Selection:
    """What a baseline decides for one video on the pooled grid (F frames, n cells)."""

    kept: torch.Tensor  # (F, n) bool, positions emitted
    merged: torch.Tensor  # (F, n) bool, positions folded into an emitted token
    target: torch.Tensor | None = None  # (F*n,) long: value at t = mean of the positions with target t
    stages: dict[str, int] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)


def frame_budgets(total: int, frames: int, cap: int) -> torch.Tensor:
    """``total`` tokens spread over ``frames`` as evenly as possible (earlier frames take the
    remainder), at most ``cap`` each. Returns (F,) long."""
    return torch.tensor(even_split(total, frames, cap), dtype=torch.long)


def pool_scores(scores: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
    """(F, N) attention-score maps pooled as the model pools the frames, (F, n), float32."""
    return pool_tokens(scores.float()[..., None], layout.grid, layout.pool_mode, layout.pool_stride)[..., 0]


def mean_into(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Average of every token's features grouped by ``target`` (a flat index per token, itself for
    an emitted token). features: (M, D); target: (M,) long. Returns (M, D): at position t the mean
    of all tokens with target t (computed in float32, cast back)."""
    m, d = features.shape
    total = torch.zeros(m, d, dtype=torch.float32, device=features.device).index_add_(0, target, features.float())
    count = torch.zeros(m, dtype=torch.float32, device=features.device).index_add_(
        0, target, torch.ones(m, device=features.device)
    )
    return (total / count.clamp_min(1.0)[:, None]).to(features.dtype)


def emits_trailing(cfg: Any, layout: VideoLayout) -> bool:
    """Whether the layout's newline after the video is emitted with ``cfg``."""
    return layout.trailing_newline and getattr(cfg, "one_token_newline", None) is not OneTokenNewline.PAPER


def _emit_stages(
    layout: VideoLayout, kept: torch.Tensor, trailing: bool
) -> tuple[list[Stage], torch.Tensor, torch.Tensor, int]:
    """Stages from (F, n, D) values on the pooled grid to the emitted tokens, with the layout's
    newlines; also ``(positions (T, 3), is_newline (T,), newline count)``."""
    ph, pw = layout.pooled_grid
    f_ = kept.shape[0]
    stages: list[Stage] = []
    inserted = layout.inserted_newline
    seq_kept = kept
    if inserted is not None:
        seq_kept = newline_mask(kept, (ph, pw), inserted)
        stages.append(lambda x, nl, p=inserted: newline_values(x, nl, (ph, pw), p))  # type: ignore[arg-type]
    stages.append(lambda x, nl, m=seq_kept: x[m])
    if trailing:
        stages.append(append_newline)
    seq_pos, seq_nl = sequence_positions(layout, inserted or NewlinePosition.NO_TOKEN)
    flat = torch.nonzero(seq_kept.reshape(-1))[:, 0]
    positions, is_newline = emit_positions(layout, flat, seq_pos, seq_nl, trailing)
    newlines = f_ * layout.newlines_per_frame + int(trailing)
    return stages, positions, is_newline, newlines


def _pool_stage(layout: VideoLayout) -> Stage:
    return lambda x, nl: pool_tokens(x, layout.grid, layout.pool_mode, layout.pool_stride)


def _merge_stage(target: torch.Tensor) -> Stage:
    def stage(x: torch.Tensor, nl: torch.Tensor | None) -> torch.Tensor:
        f_, n, d = x.shape
        return mean_into(x.reshape(f_ * n, d), target).view(f_, n, d)

    return stage


def check_budget(cfg: Any, layout: VideoLayout, frames: int, budget: int) -> None:
    """``ValueError`` when ``cfg``'s retention keeps fewer tokens than frames."""
    retention = float(getattr(cfg, "retention", 1.0))
    if retention < 1.0 and budget < frames:
        n = layout.cells_per_frame
        raise ValueError(
            f"method {cfg.method!r}: retention={retention} keeps {budget} tokens for {frames} frames; expected a "
            f"retention of at least one token per {layout.frame_unit} ({1 / n:.4f} on this {layout.pooled_grid[0]}x"
            f"{layout.pooled_grid[1]} grid)"
        )


#: ``select(pooled (F, n, D), video, config, budget) -> Selection``
Select = Callable[[torch.Tensor, VideoInput, Any, int], Selection]


def compress_on_grid(select: Select) -> Callable[[list[VideoInput], Any], list[CompressionResult]]:
    """A method's ``compress`` from a select function on the model's pooled grid:
    ``select(pooled (F, n, D), video, config, budget) -> Selection`` with ``budget =
    round(config.retention * F * n)`` (``F * n`` for configs without a retention). The pooling,
    merging, newlines, accounting and the :class:`~visionzip.plan.ReductionPlan` are done here."""

    def compress(videos: list[VideoInput], cfg: Any) -> list[CompressionResult]:
        out = []
        for video in videos:
            layout = video.layout
            f_, n_full, _ = video.features.shape
            n = layout.cells_per_frame
            budget = round(float(getattr(cfg, "retention", 1.0)) * f_ * n)
            check_budget(cfg, layout, f_, budget)
            stages: list[Stage] = [_pool_stage(layout)]
            pooled = stages[0](video.features, layout.newline)
            sel = select(pooled, video, cfg, budget)
            values = pooled
            if sel.target is not None:
                stages.append(_merge_stage(sel.target))
                values = stages[-1](pooled, layout.newline)
            emit, positions, is_newline, newlines = _emit_stages(layout, sel.kept, emits_trailing(cfg, layout))
            stages += emit
            tokens = values
            for stage in emit:
                tokens = stage(tokens, layout.newline)
            t = int(tokens.shape[0])
            stage = {"input": f_ * n_full, "pooled": f_ * n, **sel.stages, "newlines": newlines, "output": t}
            all_cells = torch.ones(f_, n, dtype=torch.bool, device=pooled.device)
            out.append(CompressionResult(
                tokens=tokens, anchor_mask=None, pooled_mask=all_cells, kept_mask=sel.kept, segments=list(sel.segments),
                stage_tokens=stage, retention=(t - newlines) / (f_ * n), merged_mask=sel.merged,
                pooled_grid=layout.pooled_grid, plan=ReductionPlan(layout, stages, positions, is_newline),
            ))
        return out

    return compress


def with_retention(cls: type) -> Callable[..., Any]:
    """``make_config`` of a method whose config takes a ``retention`` field (required)."""

    def make(retention: float | None = None, layout: VideoLayout | None = None, **overrides: Any) -> Any:
        if retention is None:
            raise ValueError(
                f"retention is None; expected a target retention in (0, 1] for method {cls.method_name()!r}"
            )
        return cls(retention=retention, **overrides)

    return make

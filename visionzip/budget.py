"""AOT's exact-budget mode (``AOTConfig.token_budget``, not in the release) and the calibration of
``(num_anchors, keep_ratio)`` for a target retention on a given layout.

Nothing here assumes a model: grid, pooling, frames and newlines come from the
:class:`visionzip.VideoLayout`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_choice
from .config import AOTConfig, KeyframeEmit
from .layout import VideoLayout, pool_tokens
from .ops import rank_ascending


def even_split(total: int, parts: int, cap: int | None = None) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible (earlier parts get the remainder),
    each at most ``cap``."""
    if parts <= 0:
        return []
    base, extra = divmod(max(total, 0), parts)
    out = [base + (1 if i < extra else 0) for i in range(parts)]
    return out if cap is None else [min(v, cap) for v in out]


def exact_budget_counts(
    frames: int, segments: Sequence[int], *, budget: int, cells: int, grid_cells: int, newlines_per_frame: int,
    emit_twice: bool, inter_frame: bool,
) -> tuple[list[int], list[int]]:
    """Per-frame counts of AOT's exact-budget mode, for one video.

    Returns ``(cells_per_frame (F), keep_per_frame (F))``: how many pooled cells each frame keeps
    (its top cells by pooled anchor coverage) and how many of its tokens (newline cells included)
    each later frame of a clip keeps as distinct (keyframes: 0, unused). They satisfy, with
    ``E = 2`` for the release's double keyframe emission (else 1), ``nl`` newline cells per frame:

        sum_keyframes E * (cells_k + nl) + sum_later keep_f = budget + nl * F

    so that (tokens - F * nl) = ``budget`` exactly: the paper's retention counts ``nl`` newlines per
    frame. Keyframes keep ``cells`` cells each unless the budget forces fewer or more; later frames
    keep ``cells`` candidates and share the rest evenly. Only when a clip has no later frame and the
    release's double emission leaves an odd remainder is the total one token short.
    Without the inter-frame stage every frame keeps ``budget`` / F cells (remainder to early frames).
    """
    if not inter_frame:
        return even_split(budget, frames, grid_cells), [0] * frames
    clips = len(segments)
    e = 2 if emit_twice else 1
    nl = newlines_per_frame
    target = budget + nl * frames
    later_cap = (frames - clips) * (cells + nl)
    lo = max(-(-(target - later_cap) // e) - clips * nl, 0)
    hi = min(target // e - clips * nl, clips * grid_cells)
    key_cells = min(max(clips * cells, lo), hi) if lo <= hi else max(hi, 0)
    key_split = even_split(key_cells, clips, grid_cells)
    rest = target - e * (sum(key_split) + clips * nl)
    later = even_split(rest, frames - clips, cells + nl)
    cells_out, keep_out, j = [], [], 0
    for c, length in enumerate(segments):
        cells_out.append(key_split[c])
        keep_out.append(0)
        for _ in range(length - 1):
            cells_out.append(cells)
            keep_out.append(later[j])
            j += 1
    return cells_out, keep_out


def exact_budget_masks(
    anchor_mask: torch.Tensor,
    frames: Sequence[int],
    segments: Sequence[Sequence[int]],
    *,
    cfg: AOTConfig,
    num_anchors: Sequence[int],
    layout: VideoLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled masks and per-frame keep counts of the exact-budget mode for a batch of videos that
    share a grid (``layout``: pooling and newlines; frames per video in ``frames``).

    anchor_mask: (sum F, N). Each frame keeps its top cells by pooled anchor coverage (the float
    map the release thresholds at 0.5; ties: earlier position first), as many as
    :func:`exact_budget_counts` says; candidates per later frame ``round(num_anchors * n / N)``.
    Returns ``(pooled_mask (sum F, n) bool, keep_counts (sum F,) long)``.
    """
    assert cfg.token_budget is not None
    f_all, n_full = anchor_mask.shape
    n = layout.cells_per_frame
    as_map = anchor_mask.to(torch.float32)[..., None]  # (F, N, 1)
    coverage = pool_tokens(as_map, layout.grid, layout.pool_mode, layout.pool_stride)[..., 0]
    cell_counts: list[int] = []
    keep_counts: list[int] = []
    for f_, segs, k in zip(frames, segments, num_anchors):
        cells = min(max(round(k * n / n_full), 1), n)
        c, kc = exact_budget_counts(
            f_, segs, budget=round(cfg.token_budget * f_ * n), cells=cells, grid_cells=n,
            newlines_per_frame=layout.newlines_per_frame, emit_twice=cfg.keyframe_emit is KeyframeEmit.PAPER,
            inter_frame=cfg.inter_frame,
        )
        cell_counts += c
        keep_counts += kc
    dev = anchor_mask.device
    rank = rank_ascending(-coverage)  # highest coverage first; ties: earlier position first
    mask = rank < torch.tensor(cell_counts, device=dev)[:, None]
    return mask, torch.tensor(keep_counts, device=dev, dtype=torch.long)


def anchor_multiple(layout: VideoLayout, *, window: int | None = AOTConfig.window,
                    global_ratio: float = AOTConfig.global_ratio) -> int:
    """The step anchors are counted in so that the local budget ``int(K * (1 - g))`` divides evenly
    over the frame's ``(H // w) * (W // w)`` windows (18 for 9 windows and g = 0.5); ``window``
    None: the window :func:`visionzip.anchors.resolve_window` chooses for the grid."""
    from .anchors import resolve_window

    h, w = layout.grid
    win = resolve_window(window, (h, w))
    windows = (h // win) * (w // win)
    if global_ratio >= 1.0:
        return 1
    return max(round(windows / (1.0 - global_ratio)), 1)


def calibrate_aot(
    retention: float,
    layout: VideoLayout,
    *,
    keep_ratio: float = AOTConfig.keep_ratio,
    num_clips: int = AOTConfig.num_clips,
    keyframe_emit: KeyframeEmit | str = AOTConfig.keyframe_emit,
    window: int | None = AOTConfig.window,
    global_ratio: float = AOTConfig.global_ratio,
    inter_frame: bool = True,
) -> tuple[int, float]:
    """``(num_anchors, keep_ratio)`` for AOT at a target retention (paper definition) on ``layout``.

    Keep the given keep ratio and pick the anchors so that the retention AOT's token count predicts
    hits the target. Per frame AOT keeps ``c = K * n / N`` pooled cells (N tokens per frame as the
    features arrive, n after the layout's pooling); each of the ``C`` clips emits its keyframe ``E``
    times (2 as released, 1 with ``merged_once``) and every later frame keeps ``keep_ratio * c``, so
    ``retention = c * (E*C + keep_ratio*(F - C)) / (F * n)`` (without the inter-frame stage:
    ``c / n``). ``K`` is that ``c`` scaled to the frame, rounded to the nearest multiple of
    :func:`anchor_multiple` within [multiple, N]; where the bound binds, the keep ratio is solved
    again for the rounded K (clipped to [0, 1]). At retention 1.0 every token is an anchor (K = N).

    This is what AOT's exact-budget mode (``token_budget``) uses when ``num_anchors`` is None: the
    count of cells per frame is exactly ``round(K * n / N)`` and the later frames' keep counts are
    set by the budget, so the output hits the target exactly whatever the prediction's error.
    """
    if isinstance(retention, bool) or not isinstance(retention, (int, float)) or not 0.0 < retention <= 1.0:
        raise ValueError(f"retention={retention!r} is not valid; expected a target retention in (0, 1]")
    if not isinstance(layout, VideoLayout):
        raise ValueError(f"layout must be a visionzip.VideoLayout; got {type(layout).__name__}")
    emit = check_choice("keyframe_emit", keyframe_emit, KeyframeEmit)
    f_ = layout.frames
    big_n = layout.tokens_per_frame
    n = layout.cells_per_frame
    if retention == 1.0:
        return big_n, 1.0
    clips = min(num_clips, f_) if inter_frame else f_
    e = 2 if emit is KeyframeEmit.PAPER and inter_frame else 1
    later = f_ - clips
    keep = float(keep_ratio)
    cells = retention * f_ * n / (e * clips + keep * later)
    step = anchor_multiple(layout, window=window, global_ratio=global_ratio)
    top = max(step * (big_n // step), 1)
    k = step * max(round(cells * big_n / n / step), 1)
    if not min(step, big_n) <= k <= top:
        k = min(max(k, min(step, big_n)), top)
        c = min(max(round(k * n / big_n), 1), n)
        keep = 0.0 if later == 0 else min(max((retention * f_ * n / c - e * clips) / later, 0.0), 1.0)
    return int(k), float(keep)

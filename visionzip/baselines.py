"""Baseline token-reduction methods behind the same interface as AOT, as pure tensor functions.

Every method here works on the **model's grid**: each frame's tokens are first pooled exactly as
the model does (its :class:`visionzip.VideoLayout`; the attention-score maps pooled with the same
arithmetic), so that every method gets the same frames and the same ``n = h*w`` tokens per frame,
and retention is counted as the paper does: ``(T - newlines) / (F * n)``. Where a paper acts before pooling (VisionZip inside the vision tower,
DyCoke and FastVID on LLaVA-OneVision's pooled tokens already) this is a departure only for
VisionZip; it is named in each method's docstring.

Budgets are exact: a video of ``F`` frames gets ``B = round(retention * F * n)`` tokens, newlines
excluded (``pool``: uniform grids of two sizes around the target, within half their difference
of the budget per video, see :func:`pool_grids_for`). How ``B`` is spread follows
each paper: evenly over frames (random, VisionZip; earlier frames take the remainder), globally over
the video (DyCoke), over dynamic segments in proportion to their frames (FastVID).

Tokens go to the LLM in frame order, row-major within a frame, with the newlines the model's
layout places (after every row of every frame for ``grid``, newline positions always emitted; one
after the video for ``one_token`` where the model has a newline, unless ``one_token_newline="paper"``
drops it as AOT's release does). A merged token is emitted at the grid position of the token it was
merged into.

Each ``*_select`` function takes one video's pooled tokens ``(F, n, D)`` and returns a
:class:`Selection`: ``kept (F, n)`` (positions emitted), ``merged (F, n)`` (positions folded into an
emitted token), ``target`` (the emitted position each position's value is averaged into) and extra
stage counts; positions in neither mask were dropped. :func:`compress_on_grid` turns a select
function into a registered method's ``compress``: a new grid method is one select function.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as Fn

from .budget import even_split
from .config import (
    DyCokeConfig,
    FastVIDConfig,
    FullConfig,
    NewlinePosition,
    OneTokenNewline,
    PoolConfig,
    RandomConfig,
    VisionZipConfig,
)
from .inputs import VideoInput
from .inter import dynamic_segments
from .layout import VideoLayout, append_newline, newline_mask, newline_values, pool_tokens, sequence_positions
from .ops import flat_rows, rank_ascending
from .plan import CompressionResult, ReductionPlan, Stage, emit_positions
from .registry import MethodSpec, register_method


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


def _proportional_split(total: int, weights: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to integer ``weights`` (exact sum)."""
    w = sum(weights)
    raw = [total * x / w for x in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def pool_scores(scores: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
    """(F, N) attention-score maps pooled as the model pools the frames, (F, n), float32."""
    return pool_tokens(scores.float()[..., None], layout.grid, layout.pool_mode, layout.pool_stride)[..., 0]


def _mean_into(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Average of every token's features grouped by ``target`` (a flat index per token, itself for
    an emitted token). features: (M, D); target: (M,) long. Returns (M, D): at position t the mean
    of all tokens with target t (computed in float32, cast back)."""
    m, d = features.shape
    total = torch.zeros(m, d, dtype=torch.float32, device=features.device).index_add_(0, target, features.float())
    count = torch.zeros(m, dtype=torch.float32, device=features.device).index_add_(
        0, target, torch.ones(m, device=features.device)
    )
    return (total / count.clamp_min(1.0)[:, None]).to(features.dtype)


# --------------------------------------------------------------------------------------------------
# Methods (one video, pooled grid)


def full_select(pooled: torch.Tensor) -> Selection:
    """No reduction: every pooled token emitted as itself. pooled: (F, n, D)."""
    f_, n, _ = pooled.shape
    keep = torch.ones(f_, n, dtype=torch.bool, device=pooled.device)
    return Selection(keep, torch.zeros_like(keep))


def _uniform_grids(grid: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Per cell count, the (a, c) grid, a <= h, c <= w, with that product whose aspect is closest to
    the frame's, among grids within a factor 2 of it (and the frame's own grid)."""
    h, w = grid
    best: dict[int, tuple[float, tuple[int, int]]] = {}
    for a in range(1, h + 1):
        for c in range(1, w + 1):
            aspect = abs(math.log((a / h) / (c / w)))
            if aspect > math.log(2.0) + 1e-9 and (a, c) != (h, w):
                continue
            if a * c not in best or (aspect, -a) < (best[a * c][0], -best[a * c][1][0]):
                best[a * c] = (aspect, (a, c))
    return {m: g for m, (_, g) in best.items()}


def pool_grid_for(retention: float, grid: tuple[int, int]) -> tuple[int, int]:
    """The uniform grid (a, c) for ``retention`` of an (h, w) pooled frame: the product ``a*c``
    closest to ``retention * h * w`` (ties: the larger) among grids whose aspect stays within a
    factor 2 of the frame's. Products are not dense (e.g. 38 % of 14x14 lies 2.5 cells from the
    nearest, 8x9), hence :func:`pool_grids_for`."""
    grids = _uniform_grids(grid)
    target = retention * grid[0] * grid[1]
    return grids[min(grids, key=lambda m: (abs(m - target), -m))]


def pool_grids_for(retention: float, grid: tuple[int, int], frames: int) -> list[tuple[int, int]]:
    """The grid of every frame for uniform pooling to ``retention``: the two products around the
    target, ``m_lo <= retention * h * w <= m_hi`` (one when it is a product), the larger given to as
    many frames (spread evenly) as brings the total closest to ``round(retention * F * h * w)``. The
    video's total is then within ``(m_hi - m_lo) / 2`` tokens of the budget (2 to 14 cells at most
    on 14x14: within a point of retention from 8 frames on)."""
    grids = _uniform_grids(grid)
    n = grid[0] * grid[1]
    target = retention * n
    lo = max((m for m in grids if m <= target), default=min(grids))
    hi = min((m for m in grids if m >= target), default=max(grids))
    budget = round(retention * frames * n)
    k = 0 if hi == lo else min(max(round((budget - frames * lo) / (hi - lo)), 0), frames)
    return [grids[hi] if (f + 1) * k // frames - f * k // frames else grids[lo] for f in range(frames)]


def pool_select(pooled: torch.Tensor, grid: tuple[int, int], out_grid: tuple[int, int]) -> torch.Tensor:
    """Uniform spatial pooling: adaptive average pooling of (h, w) pooled frames to ``out_grid``
    (a, c). pooled: (F, h*w, D). Returns (F, a*c, D) (the input itself when the grids are equal)."""
    f_, n, d = pooled.shape
    h, w = grid
    a, c = out_grid
    if (a, c) == (h, w):
        return pooled
    x = pooled.contiguous().view(f_, h, w, d).permute(0, 3, 1, 2)  # (F, D, h, w)
    return Fn.adaptive_avg_pool2d(x, (a, c)).permute(0, 2, 3, 1).reshape(f_, a * c, d)  # (F, a*c, D)


def random_select(pooled: torch.Tensor, budget: int, seed: int) -> Selection:
    """A seeded random subset of each frame's tokens, ``budget`` in all (spread evenly over frames),
    row-major order kept. The draw is made on the CPU from ``torch.Generator().manual_seed(seed)``
    so it is the same on every device and for a video alone or in a batch. pooled: (F, n, D)."""
    f_, n, _ = pooled.shape
    dev = pooled.device
    gen = torch.Generator().manual_seed(seed)
    draw = torch.rand(f_, n, generator=gen).to(dev)  # (F, n)
    keep = rank_ascending(draw) < frame_budgets(budget, f_, n).to(dev)[:, None]
    return Selection(keep, torch.zeros_like(keep))


def visionzip_select(pooled: torch.Tensor, scores: torch.Tensor, budget: int, contextual_ratio: float) -> Selection:
    """VisionZip (Yang et al., CVPR 2025, "VisionZip: Longer is Better but Not Necessary in Vision
    Language Models"), applied per frame.

    pooled: (F, n, D); scores: (F, n) attention received at the deep layer, pooled to the grid.
    Frame f gets ``b_f`` tokens (``budget`` spread evenly): ``c_f = round(b_f * contextual_ratio)``
    contextual and ``b_f - c_f`` dominant (VisionZip's 54 + 10 of 64 by default).
    1. Dominant: the ``b_f - c_f`` tokens receiving the most attention, emitted as themselves.
    2. Contextual: among the remaining ``r_f`` tokens (row-major), centers at every
       ``max(1, r_f // c_f)``-th one (the first ``c_f``), as VisionZip picks them; every other
       remaining token joins its most similar center (cosine of features) and each center becomes
       the mean of itself and its members.
    Departures: VisionZip runs inside the vision tower on one image (SigLIP layer -2 scores, key
    similarity, before the projector); here on projected, pooled frame tokens with scores pooled to
    the same grid, similarity of features instead of keys; VisionZip's code adds the center to
    its members' mean, here the center and members are averaged; contextual tokens are emitted at
    their center's position (row-major with the dominant ones) rather than after them.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    b = frame_budgets(budget, f_, n).to(dev)  # (F,)
    c = torch.round(b.double() * contextual_ratio).long()  # (F,) contextual
    dom = b - c
    dominant = rank_ascending(-scores.float()) < dom[:, None]  # (F, n)
    rest = ~dominant
    ordinal = rest.long().cumsum(-1) - 1  # position among the remaining tokens
    step = ((n - dom) // c.clamp_min(1)).clamp_min(1)  # (F,)
    centers = rest & (ordinal % step[:, None] == 0) & (ordinal // step[:, None] < c[:, None])
    members = rest & ~centers & (c > 0)[:, None]
    unit = Fn.normalize(pooled.float(), dim=-1)
    cos = torch.bmm(unit, unit.transpose(1, 2))  # (F, n, n)
    target = cos.masked_fill(~centers[:, None, :], float("-inf")).argmax(-1)  # (F, n)
    own = torch.arange(n, device=dev).expand(f_, n)
    target = flat_rows(torch.where(members, target, own), n)
    kept = dominant | centers
    return Selection(kept, members, target.reshape(-1), {"dominant": int(dom.sum()), "contextual": int(centers.sum())})


def dycoke_select(pooled: torch.Tensor, budget: int, window: int) -> Selection:
    """DyCoke (Tao et al., CVPR 2025, "DyCoke: Dynamic Compression of Tokens for Fast Video Large
    Language Models"), stage 1: temporal token merging (TTM).

    pooled: (F, n, D). Frames are cut into windows of ``window`` consecutive frames; the first of
    each is its anchor frame. A token of a later frame is redundant by its cosine similarity to the
    token at the same position of the anchor frame; the video's ``F*n - budget`` most redundant
    later-frame tokens are pruned (globally, most similar first: the similarity threshold that meets
    the budget) and merged by averaging into that anchor token.
    Below the budget TTM can reach (anchor frames whole: about 1/``window`` of the tokens) every
    later-frame token is merged and each anchor frame keeps its share of the budget (spread evenly):
    its most distinct tokens (lowest maximum cosine to another token of the frame); its other tokens
    (with what they absorbed) join their most similar kept token of the frame.
    Departures: DyCoke's code compares frame pairs inside windows of 4 (frames 2, 4 against 1, 3;
    frame 3 against 1) with a fixed pruning ratio per frame and drops pruned tokens; here every later
    frame is compared with its window's anchor, the ratio is set by a global budget, pruned tokens
    are averaged in, and the spatial step below TTM's reach is ours. DyCoke's stage 2 (dynamic
    pruning of the KV cache during decoding) is not implemented: it acts after the prefill, outside
    the visual tokens this harness counts.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    frame = torch.arange(f_, device=dev)
    anchor_of = (frame // window) * window  # (F,)
    is_anchor = anchor_of == frame
    unit = Fn.normalize(pooled.float(), dim=-1)
    sim = (unit * unit[anchor_of]).sum(-1)  # (F, n) cosine to the anchor frame, same position
    own = frame[:, None] * n + torch.arange(n, device=dev)[None, :]  # (F, n) flat index
    to_anchor = anchor_of[:, None] * n + torch.arange(n, device=dev)[None, :]
    later = ~is_anchor[:, None].expand(f_, n)
    anchor_tokens = int(is_anchor.sum()) * n
    if budget >= anchor_tokens:
        # keep the (budget - anchor tokens) least redundant later-frame tokens
        score = sim.masked_fill(~later, float("-inf")).reshape(-1)  # anchors rank first (never pruned)
        keep = (rank_ascending(score) < budget).view(f_, n)
        target = torch.where(keep, own, to_anchor)
        spatial = 0
    else:
        # every later-frame token merged; anchor frames keep their share by distinctness
        share = frame_budgets(budget, int(is_anchor.sum()), n).to(dev)
        per_frame = torch.zeros(f_, dtype=torch.long, device=dev)
        per_frame[is_anchor] = share
        cos = torch.bmm(unit, unit.transpose(1, 2))  # (F, n, n)
        eye = torch.eye(n, dtype=torch.bool, device=dev)
        distinct = cos.masked_fill(eye, float("-inf")).amax(-1)  # (F, n)
        keep = (rank_ascending(distinct) < per_frame[:, None]) & ~later
        nearest = cos.masked_fill(~keep[:, None, :], float("-inf")).argmax(-1)  # (F, n)
        anchor_target = frame[:, None] * n + nearest
        # a frame with no kept token points at itself: its tokens are dropped below
        anchor_target = torch.where(keep | (per_frame == 0)[:, None], own, anchor_target)
        target = torch.where(later, to_anchor, anchor_target)
        target = target.reshape(-1)[target.reshape(-1)].view(f_, n)  # second hop: later -> anchor -> kept
        spatial = int((~keep & ~later).sum())
    target_flat = target.reshape(-1)
    alive = keep.reshape(-1)[target_flat].view(f_, n)  # folded into an emitted token
    merged = alive & ~keep
    target = torch.where(alive.reshape(-1), target_flat, own.reshape(-1))
    return Selection(keep, merged, target, {"temporal_merged": int((merged & later).sum()), "spatial_merged": spatial})


def fastvid_select(
    pooled: torch.Tensor, features: torch.Tensor, budget: int, *, num_clips: int, threshold: float, knn: int
) -> Selection:
    """FastVID (Shen et al., 2025, "FastVID: Dynamic Density Pruning for Fast Video Large Language
    Models"): dynamic segmentation, then density-based spatiotemporal pruning per segment.

    pooled: (F, n, D); features: (F, N, D) the unpooled frames (for the segmentation).
    1. Segments: :func:`visionzip.dynamic_segments` (frame embedding = mean token, cut after the
       ``num_clips - 1`` lowest consecutive similarities and after every one below ``threshold``).
    2. The budget is split over segments in proportion to their frames (largest remainder: exact).
    3. Per segment, density peaks clustering (DPC-kNN) of all its tokens (frames x positions): with
       distances between L2-normalised tokens, density ``rho_i = exp(-mean of the squared distances to
       the knn nearest)``, ``delta_i`` = distance to the nearest denser token (the densest: its largest
       distance), score ``rho * delta``; the segment's budget of highest scores become cluster centers,
       every other token joins its nearest center, each center emitted (at its frame and position) as
       the mean of its cluster.
    Departures: FastVID also keeps a share of tokens chosen by [CLS] attention inside each segment
    (its anchor tokens) and merges with density weights; here every emitted token is a density-peak
    center and clusters are plain means, so the method reads no attention scores. Segmentation
    defaults are ``num_clips = 8``, ``threshold = 0.9``.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    segments = dynamic_segments(features, num_clips=min(num_clips, f_), threshold=threshold)
    share = _proportional_split(budget, segments)
    keep = torch.zeros(f_ * n, dtype=torch.bool, device=dev)
    target = torch.arange(f_ * n, device=dev)
    start = 0
    for length, b in zip(segments, share):  # one loop step per segment, vectorised inside
        lo, m = start * n, length * n
        start += length
        if b >= m:
            keep[lo : lo + m] = True
            continue
        if b == 0:
            continue
        x = Fn.normalize(pooled[lo // n : lo // n + length].reshape(m, d).float(), dim=-1)  # (M, D)
        dist = torch.cdist(x, x)  # (M, M)
        k = min(knn, m - 1)
        if k > 0:
            near = dist.masked_fill(torch.eye(m, dtype=torch.bool, device=dev), float("inf")).topk(k, largest=False).values
            rho = torch.exp(-(near**2).mean(-1))  # (M,)
        else:
            rho = torch.ones(m, device=dev)
        order = rank_ascending(-rho)  # 0 = densest; ties: earlier first
        denser = order[None, :] < order[:, None]  # (M, M) j denser than i
        delta = dist.masked_fill(~denser, float("inf")).amin(-1)
        top = order == 0
        delta = torch.where(top, dist.amax(-1), delta)
        centers = rank_ascending(-(rho * delta)) < b  # (M,)
        nearest = dist.masked_fill(~centers[None, :], float("inf")).argmin(-1)
        keep[lo : lo + m] = centers
        target[lo : lo + m] = lo + torch.where(centers, torch.arange(m, device=dev), nearest)
    keep = keep.view(f_, n)
    merged = keep.reshape(-1)[target].view(f_, n) & ~keep
    return Selection(keep, merged, target, {"clusters": int(keep.sum())}, segments=segments)


# --------------------------------------------------------------------------------------------------
# Whole pipeline: a select function on the model's grid -> a method


def _emits_trailing(cfg: Any, layout: VideoLayout) -> bool:
    return layout.trailing_newline and getattr(cfg, "one_token_newline", None) is not OneTokenNewline.PAPER


def _emit_stages(layout: VideoLayout, kept: torch.Tensor, trailing: bool) -> tuple[list[Stage], torch.Tensor, torch.Tensor, int]:
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
    positions, is_newline = emit_positions(layout, torch.nonzero(seq_kept.reshape(-1))[:, 0], seq_pos, seq_nl, trailing)
    newlines = f_ * layout.newlines_per_frame + int(trailing)
    return stages, positions, is_newline, newlines


def _pool_stage(layout: VideoLayout) -> Stage:
    return lambda x, nl: pool_tokens(x, layout.grid, layout.pool_mode, layout.pool_stride)


def _merge_stage(target: torch.Tensor) -> Stage:
    def stage(x: torch.Tensor, nl: torch.Tensor | None) -> torch.Tensor:
        f_, n, d = x.shape
        return _mean_into(x.reshape(f_ * n, d), target).view(f_, n, d)

    return stage


def _run(stages: Sequence[Stage], x: torch.Tensor, nl: torch.Tensor | None) -> torch.Tensor:
    for stage in stages:
        x = stage(x, nl)
    return x


def _check_budget(cfg: Any, layout: VideoLayout, frames: int, budget: int) -> None:
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
            _check_budget(cfg, layout, f_, budget)
            stages: list[Stage] = [_pool_stage(layout)]
            pooled = stages[0](video.features, layout.newline)
            sel = select(pooled, video, cfg, budget)
            values = pooled
            if sel.target is not None:
                stages.append(_merge_stage(sel.target))
                values = stages[-1](pooled, layout.newline)
            emit, positions, is_newline, newlines = _emit_stages(layout, sel.kept, _emits_trailing(cfg, layout))
            stages += emit
            tokens = _run(emit, values, layout.newline)
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


def _coarse_positions(grids: Sequence[tuple[int, int]], layout: VideoLayout, inserted: NewlinePosition | None,
                      trailing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each coarse cell stands for the model-grid cell at its centre; newlines marked."""
    ph, pw = layout.pooled_grid
    pos_parts, nl_parts = [], []
    for f, (a, c) in enumerate(grids):
        rows = torch.tensor([((2 * i + 1) * ph) // (2 * a) for i in range(a)])
        cols = torch.tensor([((2 * j + 1) * pw) // (2 * c) for j in range(c)])
        r = rows.repeat_interleave(c).view(a, c)
        q = cols.repeat(a).view(a, c)
        isnl = torch.zeros(a, c, dtype=torch.bool)
        if inserted is NewlinePosition.GRID:
            r = torch.cat([r, rows[:, None]], 1)
            q = torch.cat([q, torch.full((a, 1), -1)], 1)
            isnl = torch.cat([isnl, torch.ones(a, 1, dtype=torch.bool)], 1)
        r, q, isnl = r.reshape(-1), q.reshape(-1), isnl.reshape(-1)
        if inserted is NewlinePosition.FRAME:
            r = torch.cat([r, torch.tensor([ph - 1])])
            q = torch.cat([q, torch.tensor([-1])])
            isnl = torch.cat([isnl, torch.tensor([True])])
        pos_parts.append(torch.stack([torch.full_like(r, f), r, q], -1))
        nl_parts.append(isnl)
    if trailing:
        pos_parts.append(torch.tensor([[len(grids) - 1, ph - 1, -1]]))
        nl_parts.append(torch.tensor([True]))
    return torch.cat(pos_parts).long(), torch.cat(nl_parts)


def _compress_pool(videos: list[VideoInput], cfg: PoolConfig) -> list[CompressionResult]:
    """Uniform pooling: every pooled frame to a coarser grid (two sizes around the target)."""
    out = []
    for video in videos:
        layout = video.layout
        f_, n_full, _ = video.features.shape
        ph, pw = layout.pooled_grid
        n = ph * pw
        _check_budget(cfg, layout, f_, round(cfg.retention * f_ * n))
        grids = pool_grids_for(cfg.retention, (ph, pw), f_)
        trailing = _emits_trailing(cfg, layout)
        inserted = layout.inserted_newline

        def coarse(x: torch.Tensor, nl: torch.Tensor | None, grids: list[tuple[int, int]] = grids,
                   layout: VideoLayout = layout, inserted: NewlinePosition | None = inserted,
                   trailing: bool = trailing) -> torch.Tensor:
            pooled = pool_tokens(x, layout.grid, layout.pool_mode, layout.pool_stride)
            blocks: list[torch.Tensor] = [pooled[0]] * len(grids)  # every frame's block is set below
            for g in sorted(set(grids)):  # at most two grids: frames pooled together per grid
                idx = [f for f in range(len(grids)) if grids[f] == g]
                piece = pool_select(pooled[idx], layout.pooled_grid, g)  # (F_g, a*c, D)
                if inserted is not None:
                    assert nl is not None
                    piece = newline_values(piece, nl, g, inserted)
                for j, block in zip(idx, piece.unbind(0)):
                    blocks[j] = block
            tokens = torch.cat(blocks)
            return append_newline(tokens, nl) if trailing else tokens

        tokens = coarse(video.features, layout.newline)
        positions, is_newline = _coarse_positions(grids, layout, inserted, trailing)
        newlines = int(is_newline.sum())
        identity = torch.tensor([g == (ph, pw) for g in grids], device=tokens.device)[:, None]
        all_cells = torch.ones(f_, n, dtype=torch.bool, device=tokens.device)
        t = int(tokens.shape[0])
        stage = {"input": f_ * n_full, "pooled": f_ * n, "grid_cells": sum(a * c for a, c in grids),
                 "newlines": newlines, "output": t}
        out.append(CompressionResult(
            tokens=tokens, anchor_mask=None, pooled_mask=all_cells, kept_mask=all_cells & identity, segments=[],
            stage_tokens=stage, retention=(t - newlines) / (f_ * n), merged_mask=all_cells & ~identity,
            pooled_grid=(ph, pw), plan=ReductionPlan(layout, [coarse], positions, is_newline),
        ))
    return out


def _make_full(retention: float | None = None, layout: VideoLayout | None = None, **overrides: Any) -> FullConfig:
    if retention is not None and retention != 1.0:
        raise ValueError(f"retention={retention!r} is not valid for method 'full'; expected None or 1.0")
    return FullConfig(**overrides)


def with_retention(cls: type) -> Callable[..., Any]:
    """``make_config`` of a method whose config takes a ``retention`` field."""

    def make(retention: float | None = None, layout: VideoLayout | None = None, **overrides: Any) -> Any:
        if retention is None:
            raise ValueError(f"retention is None; expected a target retention in (0, 1] for method {cls.method_name()!r}")
        return cls(retention=retention, **overrides)

    return make


def _select_full(pooled: torch.Tensor, video: VideoInput, cfg: Any, budget: int) -> Selection:
    return full_select(pooled)


def _select_random(pooled: torch.Tensor, video: VideoInput, cfg: RandomConfig, budget: int) -> Selection:
    return random_select(pooled, budget, cfg.seed)


def _select_visionzip(pooled: torch.Tensor, video: VideoInput, cfg: VisionZipConfig, budget: int) -> Selection:
    assert video.deep is not None
    return visionzip_select(pooled, pool_scores(video.deep, video.layout), budget, cfg.contextual_ratio)


def _select_dycoke(pooled: torch.Tensor, video: VideoInput, cfg: DyCokeConfig, budget: int) -> Selection:
    return dycoke_select(pooled, budget, cfg.window)


def _select_fastvid(pooled: torch.Tensor, video: VideoInput, cfg: FastVIDConfig, budget: int) -> Selection:
    return fastvid_select(pooled, video.features, budget, num_clips=cfg.num_clips, threshold=cfg.segment_threshold,
                          knn=cfg.knn)


register_method(MethodSpec("full", FullConfig, compress_on_grid(_select_full), make_config=_make_full))
register_method(MethodSpec("pool", PoolConfig, _compress_pool, make_config=with_retention(PoolConfig)))
register_method(MethodSpec("random", RandomConfig, compress_on_grid(_select_random), make_config=with_retention(RandomConfig)))
register_method(MethodSpec("visionzip", VisionZipConfig, compress_on_grid(_select_visionzip), scores="deep",
                           make_config=with_retention(VisionZipConfig)))
register_method(MethodSpec("dycoke", DyCokeConfig, compress_on_grid(_select_dycoke), make_config=with_retention(DyCokeConfig)))
register_method(MethodSpec("fastvid", FastVIDConfig, compress_on_grid(_select_fastvid),
                           make_config=with_retention(FastVIDConfig)))

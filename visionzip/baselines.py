"""Baseline token-reduction methods behind the same interface as AOT, as pure tensor functions.

Every method here works on the **pooled grid**: each frame's tokens are first pooled exactly as
LLaVA-NeXT does (:func:`visionzip.pool_frames`, ``pool_mode`` / ``pool_stride`` of the config; the
attention-score maps pooled with the same arithmetic), so that every method gets the same frames and
the same ``n = h*w`` tokens per frame, and retention is counted as the paper does:
``(T - newlines) / (F * n)``. Where a paper acts before pooling (VisionZip inside the vision tower,
DyCoke and FastVID on LLaVA-OneVision's pooled tokens already) this is a departure only for
VisionZip; it is named in each method's docstring.

Budgets are exact: a video of ``F`` frames gets ``B = round(retention * F * n)`` tokens, newlines
excluded (``pool``: uniform grids of two sizes around the target, within half their difference
of the budget per video, see :func:`pool_grids_for`). How ``B`` is spread follows
each paper: evenly over frames (random, VisionZip; earlier frames take the remainder), globally over
the video (DyCoke), over dynamic segments in proportion to their frames (FastVID).

Tokens go to the LLM in frame order, row-major within a frame, with newlines placed by
``newline_position`` as LLaVA / AOT place them (:func:`visionzip.insert_newlines`: after every row of
every frame for ``grid``, newline positions always emitted; one after the video for ``one_token``
only with ``one_token_newline="append"``, as AOT's release). A merged token is emitted at the grid
position of the token it was merged into.

Each ``*_select`` function takes one video's pooled tokens ``(F, n, D)`` and returns a
:class:`Selection`: values ``(F, n, D)`` (the emitted value at every position), ``kept (F, n)``
(positions emitted), ``merged (F, n)`` (positions folded into an emitted token) and extra stage
counts; positions in neither were dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as Fn

from ._checks import check_finite, check_grid, check_tensor
from .aot import (
    CompressionResult,
    _as_video_list,
    _even_split,
    dynamic_segments,
    insert_newlines,
    pool_frames,
    pooled_grid,
)
from .config import (
    DyCokeConfig,
    FastVIDConfig,
    FullConfig,
    NewlinePosition,
    OneTokenNewline,
    PoolConfig,
    PoolMode,
    RandomConfig,
    VisionZipConfig,
)

BaselineConfig = FullConfig | PoolConfig | RandomConfig | VisionZipConfig | DyCokeConfig | FastVIDConfig


@dataclass
class Selection:
    """What a baseline decides for one video on the pooled grid (F frames, n cells)."""

    values: torch.Tensor  # (F, n, D) value emitted at each position (where ``kept``)
    kept: torch.Tensor  # (F, n) bool, positions emitted
    merged: torch.Tensor  # (F, n) bool, positions folded into an emitted token
    stages: dict[str, int] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)


def frame_budgets(total: int, frames: int, cap: int) -> torch.Tensor:
    """``total`` tokens spread over ``frames`` as evenly as possible (earlier frames take the
    remainder), at most ``cap`` each. Returns (F,) long."""
    return torch.tensor(_even_split(total, frames, cap), dtype=torch.long)


def _proportional_split(total: int, weights: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to integer ``weights`` (exact sum)."""
    w = sum(weights)
    raw = [total * x / w for x in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def _rank_ascending(values: torch.Tensor) -> torch.Tensor:
    """Rank of every entry along the last dim (0 = smallest; ties: earlier first)."""
    order = torch.argsort(values, dim=-1, stable=True)
    ar = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ar)


def _pool_scores(scores: torch.Tensor, grid: tuple[int, int], mode: PoolMode, stride: int) -> torch.Tensor:
    """(F, N) attention-score maps pooled to the grid of :func:`pool_frames`, (F, n), float32."""
    ones = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    return pool_frames(scores.float()[..., None], ones, grid=grid, mode=mode, stride=stride)[0][..., 0]


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
    return Selection(pooled, keep, torch.zeros_like(keep))


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
    keep = _rank_ascending(draw) < frame_budgets(budget, f_, n).to(dev)[:, None]
    return Selection(pooled, keep, torch.zeros_like(keep))


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
    dominant = _rank_ascending(-scores.float()) < dom[:, None]  # (F, n)
    rest = ~dominant
    ordinal = rest.long().cumsum(-1) - 1  # position among the remaining tokens
    step = ((n - dom) // c.clamp_min(1)).clamp_min(1)  # (F,)
    centers = rest & (ordinal % step[:, None] == 0) & (ordinal // step[:, None] < c[:, None])
    members = rest & ~centers & (c > 0)[:, None]
    unit = Fn.normalize(pooled.float(), dim=-1)
    cos = torch.bmm(unit, unit.transpose(1, 2))  # (F, n, n)
    target = cos.masked_fill(~centers[:, None, :], float("-inf")).argmax(-1)  # (F, n)
    own = torch.arange(n, device=dev).expand(f_, n)
    target = torch.where(members, target, own) + torch.arange(f_, device=dev)[:, None] * n  # flat
    values = _mean_into(pooled.reshape(f_ * n, d), target.reshape(-1)).view(f_, n, d)
    kept = dominant | centers
    return Selection(values, kept, members, {"dominant": int(dom.sum()), "contextual": int(centers.sum())})


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
        keep = (_rank_ascending(score) < budget).view(f_, n)
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
        keep = (_rank_ascending(distinct) < per_frame[:, None]) & ~later
        nearest = cos.masked_fill(~keep[:, None, :], float("-inf")).argmax(-1)  # (F, n)
        anchor_target = frame[:, None] * n + nearest
        # a frame with no kept token points at itself: its tokens are dropped below
        anchor_target = torch.where(keep | (per_frame == 0)[:, None], own, anchor_target)
        target = torch.where(later, to_anchor, anchor_target)
        target = target.reshape(-1)[target.reshape(-1)].view(f_, n)  # second hop: later -> anchor -> kept
        spatial = int((~keep & ~later).sum())
    target_flat = target.reshape(-1)
    alive = keep.reshape(-1)[target_flat].view(f_, n)  # folded into an emitted token
    values = _mean_into(pooled.reshape(f_ * n, d), torch.where(alive.reshape(-1), target_flat, own.reshape(-1))).view(f_, n, d)
    merged = alive & ~keep
    return Selection(values, keep, merged, {"temporal_merged": int((merged & later).sum()), "spatial_merged": spatial})


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
        order = _rank_ascending(-rho)  # 0 = densest; ties: earlier first
        denser = order[None, :] < order[:, None]  # (M, M) j denser than i
        delta = dist.masked_fill(~denser, float("inf")).amin(-1)
        top = order == 0
        delta = torch.where(top, dist.amax(-1), delta)
        centers = _rank_ascending(-(rho * delta)) < b  # (M,)
        nearest = dist.masked_fill(~centers[None, :], float("inf")).argmin(-1)
        keep[lo : lo + m] = centers
        target[lo : lo + m] = lo + torch.where(centers, torch.arange(m, device=dev), nearest)
    values = _mean_into(pooled.reshape(f_ * n, d), target).view(f_, n, d)
    keep = keep.view(f_, n)
    merged = keep.reshape(-1)[target].view(f_, n) & ~keep
    return Selection(values, keep, merged, {"clusters": int(keep.sum())}, segments=segments)


# --------------------------------------------------------------------------------------------------
# Whole pipeline


def _needs_newline(cfg: BaselineConfig) -> bool:
    pos = cfg.newline_position
    return pos in (NewlinePosition.GRID, NewlinePosition.FRAME) or (
        pos is NewlinePosition.ONE_TOKEN and cfg.one_token_newline is OneTokenNewline.APPEND
    )


def _emit(
    values: torch.Tensor, kept: torch.Tensor, grid: tuple[int, int], cfg: BaselineConfig, image_newline: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """Emitted tokens (T, D) with newlines as LLaVA / AOT place them, and the newline count.
    values: (F, n, D); kept: (F, n) over ``grid``."""
    f_ = values.shape[0]
    pos = cfg.newline_position
    newlines = 0
    if pos in (NewlinePosition.GRID, NewlinePosition.FRAME):
        assert image_newline is not None
        values, kept = insert_newlines(values, kept, image_newline, grid=grid, position=pos)
        newlines = f_ * (grid[0] if pos is NewlinePosition.GRID else 1)
    tokens = values[kept]  # (T, D), frame-major, row-major
    if pos is NewlinePosition.ONE_TOKEN and cfg.one_token_newline is OneTokenNewline.APPEND:
        assert image_newline is not None
        tokens = torch.cat([tokens, image_newline.to(device=tokens.device, dtype=tokens.dtype)[None]])
        newlines += 1
    return tokens, newlines


def _compress_one(
    x: torch.Tensor, deep: torch.Tensor | None, cfg: BaselineConfig, grid: tuple[int, int], image_newline: torch.Tensor | None
) -> CompressionResult:
    f_, n_full, _ = x.shape
    ones = torch.ones(f_, n_full, dtype=torch.bool, device=x.device)
    pooled, _ = pool_frames(x, ones, grid=grid, mode=cfg.pool_mode, stride=cfg.pool_stride)  # (F, n, D)
    ph, pw = pooled_grid(grid, mode=cfg.pool_mode, stride=cfg.pool_stride)
    n = ph * pw
    all_cells = torch.ones(f_, n, dtype=torch.bool, device=x.device)
    budget = round(cfg.retention * f_ * n)
    if isinstance(cfg, PoolConfig):
        grids = pool_grids_for(cfg.retention, (ph, pw), f_)
        blocks = [pooled[0]] * f_  # placeholders: every frame's block is set below
        newlines = 0
        for g in sorted(set(grids)):  # at most two grids: frames pooled together per grid
            idx = [f for f in range(f_) if grids[f] == g]
            out = pool_select(pooled[idx], (ph, pw), g)  # (F_g, a*c, D)
            flat_cfg = cfg.replace(one_token_newline=OneTokenNewline.PAPER)
            keep_g = torch.ones(out.shape[:2], dtype=torch.bool, device=x.device)
            seq, nl_g = _emit(out, keep_g, g, flat_cfg, image_newline)
            newlines += nl_g
            for j, piece in zip(idx, seq.view(len(idx), -1, seq.shape[-1]).unbind(0)):
                blocks[j] = piece
        tokens = torch.cat(blocks)
        if cfg.newline_position is NewlinePosition.ONE_TOKEN and cfg.one_token_newline is OneTokenNewline.APPEND:
            assert image_newline is not None
            tokens = torch.cat([tokens, image_newline.to(device=tokens.device, dtype=tokens.dtype)[None]])
            newlines += 1
        identity = torch.tensor([g == (ph, pw) for g in grids], device=x.device)[:, None]
        kept, merged = all_cells & identity, all_cells & ~identity
        stages = {"grid_cells": sum(a * c for a, c in grids)}
        sel = Selection(pooled, kept, merged)
    else:
        if isinstance(cfg, FullConfig):
            sel = full_select(pooled)
        elif isinstance(cfg, RandomConfig):
            sel = random_select(pooled, budget, cfg.seed)
        elif isinstance(cfg, VisionZipConfig):
            assert deep is not None
            scores = _pool_scores(deep, grid, cfg.pool_mode, cfg.pool_stride)
            sel = visionzip_select(pooled, scores, budget, cfg.contextual_ratio)
        elif isinstance(cfg, DyCokeConfig):
            sel = dycoke_select(pooled, budget, cfg.window)
        else:
            assert isinstance(cfg, FastVIDConfig)
            sel = fastvid_select(
                pooled, x, budget, num_clips=cfg.num_clips, threshold=cfg.segment_threshold, knn=cfg.knn
            )
        tokens, newlines = _emit(sel.values, sel.kept, (ph, pw), cfg, image_newline)
        kept, merged, stages = sel.kept, sel.merged, sel.stages
    t = int(tokens.shape[0])
    stage = {"input": f_ * n_full, "pooled": f_ * n, **stages, "newlines": newlines, "output": t}
    return CompressionResult(
        tokens=tokens, anchor_mask=None, pooled_mask=all_cells, kept_mask=kept, segments=list(sel.segments),
        stage_tokens=stage, retention=(t - newlines) / (f_ * n), merged_mask=merged, pooled_grid=(ph, pw),
    )


def compress_baseline(
    features: torch.Tensor | Sequence[torch.Tensor],
    shallow_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    deep_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    config: BaselineConfig,
    grid: tuple[int, int],
    image_newline: torch.Tensor | None = None,
) -> CompressionResult | list[CompressionResult]:
    """Run a baseline on one video or a batch (stacked (B, F, N, D) or a list with own F); scores
    (F, N) per video, or ``None`` when ``config.needs_scores`` is False (then they are not read).
    Each video's result is the same as if it were compressed alone."""
    feats, batched = _as_video_list("features", features, 3)
    n, d = feats[0].shape[1], feats[0].shape[2]
    deep: list[torch.Tensor | None] = [None] * len(feats)
    if config.needs_scores:
        for name, value in (("shallow_scores", shallow_scores), ("deep_scores", deep_scores)):
            if value is None:
                raise ValueError(f"{name} is None; expected (F, N) attention scores: method {config.method.value!r} reads them")
        deep_list, _ = _as_video_list("deep_scores", deep_scores, 2)
        if len(deep_list) != len(feats):
            raise ValueError(
                f"features and deep_scores hold {len(feats)} and {len(deep_list)} videos; expected the same number"
            )
        deep = list(deep_list)
    for i, x in enumerate(feats):
        tag = f"[{i}]" if batched else ""
        check_tensor(f"features{tag}", x, shape=(None, n, d), floating=True)
        if x.shape[0] == 0:
            raise ValueError(f"features{tag} has 0 frames; expected at least 1")
        check_finite(f"features{tag}", x)
        if deep[i] is not None:
            check_tensor(f"deep_scores{tag}", deep[i], shape=(x.shape[0], n), floating=True)
            check_finite(f"deep_scores{tag}", deep[i])  # type: ignore[arg-type]
    h, w = check_grid(grid, n)
    stride = config.pool_stride
    if stride > min(h, w):
        raise ValueError(f"config.pool_stride={stride} is not valid for grid {(h, w)}; expected at most {min(h, w)}")
    if _needs_newline(config):
        if image_newline is None:
            raise ValueError(
                f"image_newline is None; expected a ({d},) tensor for newline_position={config.newline_position.value!r}"
                + (" with one_token_newline='append'" if config.newline_position is NewlinePosition.ONE_TOKEN else "")
            )
        check_tensor("image_newline", image_newline, shape=(d,), floating=True)
        check_finite("image_newline", image_newline)
    results = [
        _compress_one(x, None if t is None else t.to(x.device), config, (h, w), image_newline) for x, t in zip(feats, deep)
    ]
    return results if batched else results[0]

"""AOT: anchor tokens + optimal transport (CVPR 2026), the whole pipeline over a model's layout.

Pipeline per video (docs/algorithm.md §1-4)::

    features (F, N, D) --select_anchors--> mask (F, N)                       visionzip.anchors
                       --intra-frame OT + the model's pooling--> (F, n, D)   visionzip.intra
                       --newlines of the layout--> (F, n', D)
                       --inter-frame OT per clip--> tokens (T, D)            visionzip.inter

Every stage's decision is computed once and applied as a linear stage of the video's
:class:`~visionzip.plan.ReductionPlan`; the tokens are that plan applied to the features. A batch of
videos sharing a grid and pooling runs anchor selection and the intra-frame transport on all their frames at
once (``groups`` keep the release's per-video Sinkhorn stopping rule inside each video).
"""

from __future__ import annotations

import torch

from .anchors import anchor_mask, resolve_window
from .budget import calibrate_aot, exact_budget_masks
from .config import AOTConfig, NewlinePosition, OneTokenNewline, Segmentation
from .inputs import VideoInput
from .inter import dynamic_segments, inter_plan, uniform_segments
from .intra import IntraWeights, apply_intra_pool, intra_weights
from .layout import (
    VideoLayout,
    append_newline,
    kept_with_newlines,
    newline_mask,
    newline_values,
    pool_mask,
    sequence_positions,
)
from .ops import front_indices
from .plan import CompressionResult, ReductionPlan, Stage, emit_positions
from .registry import MethodSpec, register_method


def resolved_anchors(cfg: AOTConfig, layout: VideoLayout) -> int:
    """The anchor count for one video: the config's, or calibrated from ``token_budget`` on the layout."""
    if cfg.num_anchors is not None:
        return cfg.num_anchors
    assert cfg.token_budget is not None
    k, _ = calibrate_aot(
        cfg.token_budget, layout, keep_ratio=cfg.keep_ratio, num_clips=cfg.num_clips, keyframe_emit=cfg.keyframe_emit,
        window=cfg.window, global_ratio=cfg.global_ratio, inter_frame=cfg.inter_frame,
    )
    return k


def check_aot(videos: list[VideoInput], cfg: AOTConfig) -> None:
    """What AOT asks of its inputs beyond their shapes: enough frames for the clips, anchors that fit."""
    for i, v in enumerate(videos):
        tag = f" of video {i}" if len(videos) > 1 else ""
        n = v.layout.tokens_per_frame
        resolve_window(cfg.window, v.layout.grid, what=f"video {i}" if len(videos) > 1 else "the video")
        if cfg.num_anchors is not None and cfg.num_anchors > n:
            raise ValueError(
                f"config.num_anchors={cfg.num_anchors} exceeds N={n} tokens per frame{tag}; expected <= {n}"
            )
        if cfg.inter_frame and v.frames < _clips(cfg, v.frames):
            raise ValueError(
                f"frames={v.frames}{tag} is fewer than num_clips={cfg.num_clips}; expected at least one frame per clip"
            )
        budget = None if cfg.token_budget is None else round(cfg.token_budget * v.layout.num_cells)
        if budget is not None and budget < v.frames and cfg.token_budget < 1.0:
            raise ValueError(
                f"method 'aot': token_budget={cfg.token_budget} keeps {round(cfg.token_budget * v.layout.num_cells)} "
                f"tokens for {v.frames} frames{tag}; expected a retention of at least one token per "
                f"{v.layout.frame_unit} ({v.frames / v.layout.num_cells:.4f} on this "
                f"{v.layout.pooled_grid[0]}x{v.layout.pooled_grid[1]} grid)"
            )


def compress_aot(videos: list[VideoInput], cfg: AOTConfig) -> list[CompressionResult]:
    """AOT on validated videos (see :func:`visionzip.compress_video`); videos sharing a grid and
    pooling are batched, each result is the same as if its video were compressed alone."""
    check_aot(videos, cfg)
    results: list[CompressionResult | None] = [None] * len(videos)
    # batched together: videos whose frames are shaped and pooled alike (the group's masks read one layout)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(videos):
        lay = v.layout
        groups.setdefault((lay.grid, lay.pool_mode, lay.pool_stride, lay.newlines_per_frame), []).append(i)
    for members in groups.values():
        for i, res in zip(members, _compress_group([videos[i] for i in members], cfg)):
            results[i] = res
    return results  # type: ignore[return-value]


def _compress_group(videos: list[VideoInput], cfg: AOTConfig) -> list[CompressionResult]:
    grid = videos[0].layout.grid
    frames = [v.frames for v in videos]
    x = videos[0].features if len(videos) == 1 else torch.cat([v.features for v in videos])  # (sum F, N, D)
    dev = x.device
    groups = torch.repeat_interleave(torch.arange(len(frames), device=dev), torch.tensor(frames, device=dev))
    anchors = [resolved_anchors(cfg, v.layout) for v in videos]
    window = resolve_window(cfg.window, grid)
    assert all(v.shallow is not None and v.deep is not None for v in videos)
    if len(set(anchors)) == 1:
        s_sh = videos[0].shallow if len(videos) == 1 else torch.cat([v.shallow for v in videos])  # type: ignore[misc]
        s_dp = videos[0].deep if len(videos) == 1 else torch.cat([v.deep for v in videos])  # type: ignore[misc]
        mask = anchor_mask(s_sh, s_dp, grid, anchors[0], cfg.global_ratio, window, cfg.anchor_budget)  # type: ignore[arg-type]
    else:  # calibrated per video: anchor counts differ with the frame count
        mask = torch.cat([
            anchor_mask(v.shallow, v.deep, grid, k, cfg.global_ratio, window, cfg.anchor_budget)  # type: ignore[arg-type]
            for v, k in zip(videos, anchors)
        ])
    weights = intra_weights(
        x, mask, grid=grid, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=cfg.effective_intra_scale, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol,
        sinkhorn_stop=cfg.sinkhorn_stop, ot_mass=cfg.ot_mass, groups=groups, norms=_norms(videos),
    )
    segments = [_segments_for(cfg, v) if cfg.inter_frame else [] for v in videos]
    layout0 = videos[0].layout
    if cfg.token_budget is not None:
        pooled_masks, keep_counts = exact_budget_masks(
            mask, frames, segments, cfg=cfg, num_anchors=anchors, layout=layout0,
        )
    else:
        pooled_masks, keep_counts = pool_mask(mask, grid, layout0.pool_mode, layout0.pool_stride), None
    slices, start = [], 0
    for v in videos:
        slices.append(slice(start, start + v.frames))
        start += v.frames
    # only the kept pooled tokens are read on (unless the inter-frame stage runs on a sequence with
    # newlines inserted): those rows are formed alone, never the whole pooled video, and the merge's
    # weights are marked as read there (IntraWeights.reading), so the plan's replay forms them alike
    compact = not (cfg.inter_frame and layout0.inserted_newline is not None)
    kept = [front_indices(pooled_masks[sl]) if compact else None for sl in slices]  # (rows, valid, counts)
    per_video = [
        None if weights is None else weights.frames(sl) if k is None else weights.frames(sl).reading(k[0], k[2])
        for sl, k in zip(slices, kept)
    ]
    pooled = [
        apply_intra_pool(
            v.features, w, v.layout.grid, v.layout.pool_mode, v.layout.pool_stride, rows=None if k is None else k[0],
        )
        for v, w, k in zip(videos, per_video, kept)
    ]
    return [
        _compress_one(
            v, cfg, mask[sl], w, seq, pooled_masks[sl], None if keep_counts is None else keep_counts[sl], segs,
            compact=compact,
        )
        for v, sl, w, seq, segs in zip(videos, slices, per_video, pooled, segments)
    ]


def _norms(videos: list[VideoInput]) -> torch.Tensor | None:
    """The (sum F, N) token norms the input check computed, when every video has them."""
    if any(v.norms is None for v in videos):
        return None
    return videos[0].norms if len(videos) == 1 else torch.cat([v.norms for v in videos])  # type: ignore[misc]


def _clips(cfg: AOTConfig, frames: int) -> int:
    """Clips of a video: the config's; a layout-calibrated config (``num_anchors`` None, what
    ``"aot@<r>"`` gives) uses at most one clip per frame on short videos."""
    return min(cfg.num_clips, frames) if cfg.num_anchors is None else cfg.num_clips


def _segments_for(cfg: AOTConfig, video: VideoInput) -> list[int]:
    clips = _clips(cfg, video.frames)
    if cfg.segmentation is Segmentation.DYNAMIC:
        return dynamic_segments(video.features, num_clips=clips, threshold=cfg.segment_threshold)
    return uniform_segments(video.frames, clips)


def _intra_stage(weights: IntraWeights | None, layout: VideoLayout) -> Stage:
    return lambda x, nl: apply_intra_pool(x, weights, layout.grid, layout.pool_mode, layout.pool_stride)


def _newline_stage(layout: VideoLayout, position: NewlinePosition) -> Stage:
    def stage(x: torch.Tensor, nl: torch.Tensor | None) -> torch.Tensor:
        assert nl is not None
        return newline_values(x, nl, layout.pooled_grid, position)

    return stage


def _compress_one(
    video: VideoInput,
    cfg: AOTConfig,
    amask: torch.Tensor,
    weights: IntraWeights | None,
    seq: torch.Tensor,
    pmask: torch.Tensor,
    keep_counts: torch.Tensor | None,
    segments: list[int],
    *,
    compact: bool = False,
) -> CompressionResult:
    """One video's result. ``seq``: its pooled frames (F, n, D), or with ``compact`` only their kept
    tokens (F, k, D) in :func:`~visionzip.ops.front_indices` order of ``pmask``."""
    layout = video.layout
    f_, n_full = amask.shape
    ph, pw = layout.pooled_grid
    newline = layout.newline
    stages: list[Stage] = [_intra_stage(weights, layout)]  # seq (F, n, D): this stage applied to the features
    seq_mask = pmask
    inserted = layout.inserted_newline
    if inserted is not None:
        stages.append(_newline_stage(layout, inserted))
        seq_mask = newline_mask(pmask, (ph, pw), inserted)
    if cfg.inter_frame:
        if inserted is not None:
            assert not compact
            seq = stages[-1](seq, newline)
        plan = inter_plan(
            None if compact else seq, seq_mask, segments, keep_ratio=cfg.keep_ratio,
            scale=cfg.inter_scale_for(layout.newline_position), sigma=cfg.inter_sigma, epsilon=cfg.inter_epsilon,
            max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
            keyframe_emit=cfg.keyframe_emit, keep_rule=cfg.inter_keep, keep_counts=keep_counts,
            rows=seq if compact else None,
        )
        stages.append(lambda x, nl, p=plan: p.apply(x))
        sources = plan.sources(seq_mask.shape[1])
        kept = plan.kept
        assert kept is not None and plan.tokens is not None
        tokens = plan.tokens  # equal to the stage applied to seq (tests check plan.apply against it)
    else:
        stages.append(lambda x, nl, m=seq_mask: x[m])
        sources = torch.nonzero(seq_mask.reshape(-1))[:, 0]
        kept = seq_mask
        # the kept entries of the sequence with newlines, read from the pooled frames without building it
        if inserted is not None:
            tokens = kept_with_newlines(seq, newline, (ph, pw), inserted, pmask, compact=compact)
        else:
            tokens = seq[front_indices(pmask)[1]] if compact else seq[pmask]
    trailing = cfg.one_token_newline is OneTokenNewline.APPEND and layout.trailing_newline
    if trailing:
        stages.append(append_newline)
        tokens = append_newline(tokens, newline)
    seq_pos, seq_nl = sequence_positions(layout, inserted or NewlinePosition.NO_TOKEN)
    positions, is_newline = emit_positions(layout, sources, seq_pos, seq_nl, trailing)
    newlines = layout.newlines_per_frame * f_ + int(trailing)
    t = int(tokens.shape[0])
    stage_tokens = {
        "input": f_ * n_full,
        "anchors": int(amask.sum()),
        "pooled": int(pmask.sum()),
        "newlines": newlines,
        "output": t,
    }
    return CompressionResult(
        tokens=tokens, anchor_mask=amask, pooled_mask=pmask, kept_mask=kept, segments=segments,
        stage_tokens=stage_tokens, retention=(t - newlines) / (f_ * ph * pw), merged_mask=~kept, pooled_grid=(ph, pw),
        plan=ReductionPlan(layout, stages, positions, is_newline),
    )


def make_aot_config(
    retention: float | None = None, layout: VideoLayout | None = None, **overrides: object
) -> AOTConfig:
    """AOT for ``"aot@<retention>"``: without a retention the release's defaults; with one, the
    exact-budget mode (``token_budget=retention``), the anchor window chosen from each video's grid
    (``window=None``: 9 on 27 x 27) and anchors calibrated per video from the
    layout (:func:`visionzip.calibrate_aot`; now, when ``layout`` is given); at 1.0 the identity:
    every token an anchor, every token kept, keyframes emitted once, the model's newline kept, so
    the output is the model's uncompressed sequence."""
    if retention is None:
        return AOTConfig(**overrides)  # type: ignore[arg-type]
    if isinstance(retention, bool) or not isinstance(retention, (int, float)) or not 0.0 < retention <= 1.0:
        raise ValueError(
            f"retention={retention!r} is not valid for method 'aot'; expected a target retention in (0, 1]"
        )
    from .config import AnchorBudget, InterKeep, KeyframeEmit

    base: dict[str, object] = {"num_anchors": None, "token_budget": float(retention), "window": None}
    if retention == 1.0:
        base.update(keep_ratio=1.0, anchor_budget=AnchorBudget.EXACT, inter_keep=InterKeep.EXACT,
                    keyframe_emit=KeyframeEmit.MERGED_ONCE, one_token_newline=OneTokenNewline.APPEND)
    cfg = AOTConfig(**{**base, **overrides})  # type: ignore[arg-type]
    if layout is not None and "num_anchors" not in overrides:
        k, keep = calibrate_aot(
            float(retention), layout, keep_ratio=cfg.keep_ratio, num_clips=cfg.num_clips,
            keyframe_emit=cfg.keyframe_emit, window=cfg.window, global_ratio=cfg.global_ratio,
            inter_frame=cfg.inter_frame,
        )
        cfg = cfg.replace(num_anchors=k, **({} if "keep_ratio" in overrides else {"keep_ratio": keep}))
    return cfg


register_method(MethodSpec("aot", AOTConfig, compress_aot, scores="shallow_deep", make_config=make_aot_config))

"""AOT: anchor tokens + optimal transport, as pure batched tensor functions (SPEC sections 1-4).

Pipeline per video (``compress_video``)::

    features (F, N, D) --select_anchors--> mask (F, N)
                       --merge_intra_frame--> (F, N, D)          anchors absorb pruned context
                       --pool_frames--> (F, n, D), mask (F, n)   2x2 pool of features and mask
                       --insert_newlines--> (F, n', D)           ``grid`` / ``frame`` newline modes
                       --merge_inter_frame--> tokens (T, D)      per clip, keyframe absorbs repeats

Conventions: ``F`` frames, ``N = H*W`` tokens per frame, ``D`` feature width. Every function works on
all frames at once (no Python loop over tokens or frames) and keeps the input dtype; transport is
solved in float32. A batch of videos is a concatenation of their frames plus ``groups`` ids, so the
only per-video coupling of the release (the Sinkhorn stopping rule) stays inside each video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as Fn

from ._checks import check_choice, check_finite, check_grid, check_mask, check_ratio, check_tensor
from .config import (
    AnchorBudget,
    AOTConfig,
    InterKeep,
    KeyframeEmit,
    NewlinePosition,
    OneTokenNewline,
    OTMass,
    PoolMode,
    Segmentation,
    SinkhornStop,
)
from .sinkhorn import sinkhorn

_D = AOTConfig()  # the one place the defaults live: function defaults below read them from here

# --------------------------------------------------------------------------------------------------
# 1. Anchor selection


def select_anchors(
    shallow_scores: torch.Tensor,
    deep_scores: torch.Tensor,
    *,
    grid: tuple[int, int],
    num_anchors: int,
    global_ratio: float = _D.global_ratio,
    window: int = _D.window,
    budget: AnchorBudget | str = _D.anchor_budget,
) -> torch.Tensor:
    """Pick ``num_anchors`` anchor tokens per frame: local ones from ``shallow_scores`` inside
    non-overlapping ``window x window`` tiles, global ones from ``deep_scores`` over the frame.

    shallow_scores, deep_scores: (F, N) attention received per token (SPEC section 0), N = H*W.
    Returns a bool mask (F, N), True at anchors.

    ``budget="paper"`` reproduces the release: local budget ``int(K * (1 - g))`` split evenly over
    the ``(H//w) * (W//w)`` tiles (truncated), global budget ``K - int(K * (1 - g))`` taken after
    zeroing the local positions, so a frame can end with fewer than K anchors. ``"exact"`` gives the
    truncated remainder to the global pick and excludes local positions, so every frame has exactly K.
    """
    check_tensor("shallow_scores", shallow_scores, ndim=2, floating=True)
    check_tensor("deep_scores", deep_scores, shape=tuple(shallow_scores.shape), floating=True)
    check_finite("shallow_scores", shallow_scores)
    check_finite("deep_scores", deep_scores)
    f_, n = shallow_scores.shape
    h, w = check_grid(grid, n)
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, int) or not 1 <= num_anchors <= n:
        raise ValueError(f"num_anchors={num_anchors!r} is not valid; expected an integer in [1, {n}] (N)")
    check_ratio("global_ratio", global_ratio)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= min(h, w):
        raise ValueError(f"window={window!r} is not valid; expected an integer in [1, {min(h, w)}] (grid {h}x{w})")
    budget = check_choice("budget", budget, AnchorBudget)

    local_budget = int(num_anchors * (1.0 - global_ratio))
    nh, nw = h // window, w // window
    per_window = min(local_budget // (nh * nw), window * window)
    mask = torch.zeros(f_, n, dtype=torch.bool, device=shallow_scores.device)
    if per_window > 0:
        tiles = shallow_scores.view(f_, h, w)[:, : nh * window, : nw * window]
        tiles = tiles.reshape(f_, nh, window, nw, window).permute(0, 1, 3, 2, 4)
        tiles = tiles.reshape(f_, nh * nw, window * window)  # (F, tiles, w*w)
        top = tiles.topk(per_window, dim=-1).indices  # (F, tiles, k)
        dev = shallow_scores.device
        tile_row = torch.arange(nh, device=dev).repeat_interleave(nw) * window  # (tiles,)
        tile_col = torch.arange(nw, device=dev).repeat(nh) * window
        rows = tile_row[None, :, None] + top // window
        cols = tile_col[None, :, None] + top % window
        mask.scatter_(1, (rows * w + cols).reshape(f_, -1), True)
    if budget is AnchorBudget.PAPER:
        num_global = num_anchors - local_budget
        masked = deep_scores.masked_fill(mask, 0.0)
    else:
        num_global = num_anchors - per_window * nh * nw
        masked = deep_scores.masked_fill(mask, float("-inf"))
    if num_global > 0:
        mask.scatter_(1, masked.topk(num_global, dim=-1).indices, True)
    return mask


# --------------------------------------------------------------------------------------------------
# 2. Intra-frame OT merge


def _grid_distances(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(N, N) Euclidean distance between token positions (col/(W-1), row/(H-1))."""
    rows = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w) / max(h - 1, 1)
    cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h) / max(w - 1, 1)
    pos = torch.stack([cols, rows], dim=-1)  # (N, 2) as (x, y)
    return torch.cdist(pos[None], pos[None])[0]


def _front_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of True entries first (ascending), per row. Returns (index (F, k_max),
    valid (F, k_max), counts (F,)) with k_max the largest count (one host sync)."""
    counts = mask.sum(-1)
    k_max = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)[:, :k_max]
    valid = torch.arange(k_max, device=mask.device)[None, :] < counts[:, None]
    return order, valid, counts


def _intra_anchor_update(
    features: torch.Tensor,
    anchor_mask: torch.Tensor,
    *,
    grid: tuple[int, int],
    epsilon: float,
    position_weight: float,
    ot_weight: float,
    scale: float,
    max_iter: int,
    tol: float,
    sinkhorn_stop: SinkhornStop | str,
    ot_mass: OTMass | str,
    groups: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Core of :func:`merge_intra_frame`: the new anchor values without writing them anywhere.

    Returns ``(idx_r (F, k), valid_r (F, k), merged (F, k, D) float32, anchors (F, k, D))``:
    anchor positions in ascending order padded to the largest anchor count, their new and old
    values; or ``None`` when no frame has an anchor.
    """
    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    h, w = check_grid(grid, n)
    mask = check_mask("anchor_mask", anchor_mask, (f_, n))
    sinkhorn_stop = check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop)
    ot_mass = check_choice("ot_mass", ot_mass, OTMass)

    idx_r, valid_r, n_r = _front_indices(mask)  # (F, n_r), (F, n_r), (F,)
    if idx_r.shape[1] == 0:
        return None
    k = idx_r.shape[1]
    pruned = ~mask  # (F, N)
    n_p = pruned.sum(-1)  # (F,)

    anchors = features.gather(1, idx_r[..., None].expand(f_, k, d))  # (F, n_r, D)
    wide = torch.promote_types(features.dtype, torch.float32)  # norms accumulate in >= float32
    x_norm = torch.linalg.vector_norm(features, dim=-1, dtype=wide).float().clamp_min(1e-12)  # (F, N)
    r_norm = x_norm.gather(1, idx_r)  # (F, n_r)
    cos = torch.bmm(features, anchors.transpose(1, 2)).float()  # (F, N, n_r)
    cos = cos / x_norm[:, :, None] / r_norm[:, None, :]
    dist = _grid_distances(h, w, features.device).T[idx_r].transpose(1, 2)  # (F, N, n_r)
    cost = (1.0 - cos) + position_weight * dist
    present = pruned[:, :, None] & valid_r[:, None, :]  # (F, N, n_r)
    kernel = torch.exp(-cost / epsilon) * present
    row = pruned.float() / n_p.clamp_min(1)[:, None].float()  # (F, N)
    col = valid_r.float() / n_r.clamp_min(1)[:, None].float()  # (F, n_r)
    plan = sinkhorn(
        kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=sinkhorn_stop.value
    ).plan  # (F, N, n_r)
    if ot_mass is OTMass.PER_TOKEN:
        plan = plan * n_p[:, None, None].float()  # every pruned token carries mass 1

    # nearest anchor by cosine, for pruned tokens only
    nearest = cos.masked_fill(~valid_r[:, None, :], float("-inf")).argmax(-1)  # (F, N)
    onehot = Fn.one_hot(nearest, k).float() * pruned[:, :, None]  # (F, N, n_r)

    ot_mass_j = plan.sum(1)  # (F, n_r)
    nn_count = onehot.sum(1)  # (F, n_r)
    ot_den = 1.0 + scale * ot_mass_j
    nn_den = 1.0 + nn_count
    self_weight = ot_weight / ot_den + (1.0 - ot_weight) / nn_den  # (F, n_r)
    weights = plan * (ot_weight * scale / ot_den)[:, None, :] + onehot * ((1.0 - ot_weight) / nn_den)[:, None, :]
    context = torch.bmm(weights.transpose(1, 2).to(features.dtype), features)  # (F, n_r, D)
    merged = anchors.float() * self_weight[..., None] + context.float()  # (F, n_r, D)
    return idx_r, valid_r, merged, anchors



def merge_intra_frame(
    features: torch.Tensor,
    anchor_mask: torch.Tensor,
    *,
    grid: tuple[int, int],
    epsilon: float = _D.intra_epsilon,
    position_weight: float = _D.position_weight,
    ot_weight: float = _D.ot_weight,
    scale: float = _D.intra_scale,
    max_iter: int = _D.sinkhorn_max_iter,
    tol: float = _D.sinkhorn_tol,
    sinkhorn_stop: SinkhornStop | str = _D.sinkhorn_stop,
    ot_mass: OTMass | str = _D.ot_mass,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fold each frame's pruned tokens into its anchors with entropic OT plus a nearest-neighbour
    update (SPEC section 2). Pruned positions keep their values; anchors are overwritten.

    features: (F, N, D); anchor_mask: (F, N) bool. Returns (F, N, D) in the input dtype.
    ``groups`` (F,) video id per frame: the Sinkhorn stopping rule is shared by the frames of one
    video (as released) and independent across videos; ``None`` means one video.

    Cost ``C = (1 - cos) + position_weight * |pos_i - pos_j|``, kernel ``exp(-C/epsilon)``, uniform
    marginals. Anchor update ``ot_weight * (R + s T^T P)/(1 + s T^T 1) + (1 - ot_weight) *
    (R + sum_NN P)/(1 + #NN)`` with ``s = scale``. Cosines come from one (F, N, n_r) product; no
    (n_pruned, n_anchors, D) temporary is formed.
    """
    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    check_finite("features", features)
    update = _intra_anchor_update(
        features, anchor_mask, grid=grid, epsilon=epsilon, position_weight=position_weight, ot_weight=ot_weight,
        scale=scale, max_iter=max_iter, tol=tol, sinkhorn_stop=sinkhorn_stop, ot_mass=ot_mass, groups=groups,
    )
    out = features.clone()
    if update is None:
        return out
    idx_r, valid_r, merged, _ = update
    merged = merged.to(features.dtype)
    k = idx_r.shape[1]
    if bool(valid_r.all()):
        out.scatter_(1, idx_r[..., None].expand(f_, k, d), merged)
    else:
        flat = (idx_r + torch.arange(f_, device=features.device)[:, None] * n)[valid_r]
        out.view(f_ * n, d)[flat] = merged[valid_r]
    return out


# --------------------------------------------------------------------------------------------------
# 3. Pooling and newlines


def pooled_grid(grid: tuple[int, int], *, mode: PoolMode | str = PoolMode.BILINEAR, stride: int = 2) -> tuple[int, int]:
    """(h, w) after :func:`pool_frames`: ceil for ``bilinear``, floor for ``average``."""
    h, w = grid
    if check_choice("mode", mode, PoolMode) is PoolMode.BILINEAR:
        return math.ceil(h / stride), math.ceil(w / stride)
    return h // stride, w // stride


def pool_frames(
    features: torch.Tensor,
    mask: torch.Tensor,
    *,
    grid: tuple[int, int],
    mode: PoolMode | str = "bilinear",
    stride: int = _D.pool_stride,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaVA-NeXT's 2D pooling of every frame, applied to features and (as a float map) to the mask.

    features: (F, N, D); mask: (F, N) bool. Returns ``(pooled (F, n, D), pooled_mask (F, n) bool)``
    where a pooled cell is kept when its pooled mask value is >= 0.5. ``bilinear`` interpolates to
    ``ceil(H/stride) x ceil(W/stride)`` (align_corners=False); ``average`` is ``avg_pool2d(stride)``.
    """
    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    h, w = check_grid(grid, n)
    mask = check_mask("mask", mask, (f_, n))
    mode = check_choice("mode", mode, PoolMode)
    check_finite("features", features)
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= min(h, w):
        raise ValueError(f"stride={stride!r} is not valid; expected an integer in [1, {min(h, w)}]")
    ph, pw = pooled_grid((h, w), mode=mode, stride=stride)

    def pool(x: torch.Tensor) -> torch.Tensor:  # (F, C, H, W) -> (F, C, ph, pw)
        if mode is PoolMode.BILINEAR:
            return Fn.interpolate(x, size=(ph, pw), mode="bilinear", align_corners=False)
        return Fn.avg_pool2d(x, stride)

    # (F, D, H, W) as a channels-last view: same arithmetic as LLaVA-NeXT's contiguous NCHW call
    # (bit-identical), without the transpose copy and with the vectorised channels-last kernel.
    x = features.contiguous().view(f_, h, w, d).permute(0, 3, 1, 2)
    pooled = pool(x).permute(0, 2, 3, 1).reshape(f_, ph * pw, d)  # (F, n, D)
    pooled_mask = pool(mask.to(torch.float32).view(f_, 1, h, w)).reshape(f_, ph * pw) >= 0.5
    return pooled, pooled_mask


def _pooling_matrix(grid: tuple[int, int], mode: PoolMode, stride: int, device: torch.device) -> torch.Tensor:
    """(n, N) float32 matrix of the pooling map: pooled = M @ frame, by pooling the identity."""
    h, w = grid
    n = h * w
    eye = torch.eye(n, device=device, dtype=torch.float32).view(n, 1, h, w)
    if mode is PoolMode.BILINEAR:
        ph, pw = pooled_grid(grid, mode=mode, stride=stride)
        pooled = Fn.interpolate(eye, size=(ph, pw), mode="bilinear", align_corners=False)
    else:
        pooled = Fn.avg_pool2d(eye, stride)
    return pooled.reshape(n, -1).T


def _pool_merged(
    features: torch.Tensor,
    anchor_mask: torch.Tensor,
    update: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
    *,
    grid: tuple[int, int],
    mode: PoolMode,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool_frames`` of the anchor-merged features without building them: pooling is linear, so
    pool(X with anchors replaced) = pool(X) + M[:, anchors] @ (merged - anchors). Saves the full
    (F, N, D) copy that writing the anchors back would need."""
    pooled, pooled_mask = pool_frames(features, anchor_mask, grid=grid, mode=mode, stride=stride)
    if update is None:
        return pooled, pooled_mask
    idx_r, valid_r, merged, anchors = update
    delta = (merged - anchors.float()) * valid_r[..., None]  # (F, k, D)
    weights = _pooling_matrix(grid, mode, stride, features.device).T[idx_r]  # (F, k, n)
    correction = torch.bmm(weights.transpose(1, 2), delta)  # (F, n, D)
    return (pooled.float() + correction).to(features.dtype), pooled_mask


def insert_newlines(
    features: torch.Tensor,
    mask: torch.Tensor,
    image_newline: torch.Tensor,
    *,
    grid: tuple[int, int],
    position: NewlinePosition | str = NewlinePosition.GRID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the learned newline after every row (``grid``: (F, h*(w+1), D)) or after every frame
    (``frame``: (F, n+1, D)). Newline positions are always kept (mask True)."""
    f_, n, d = features.shape
    h, w = check_grid(grid, n, what="pooled tokens")
    check_tensor("image_newline", image_newline, shape=(d,), floating=True)
    position = check_choice("position", position, NewlinePosition)
    nl = image_newline.to(device=features.device, dtype=features.dtype)
    if position is NewlinePosition.GRID:
        x = torch.cat([features.view(f_, h, w, d), nl.expand(f_, h, 1, d)], dim=2).reshape(f_, h * (w + 1), d)
        m = torch.cat([mask.view(f_, h, w), mask.new_ones(f_, h, 1)], dim=2).reshape(f_, h * (w + 1))
        return x, m
    if position is NewlinePosition.FRAME:
        return torch.cat([features, nl.expand(f_, 1, d)], dim=1), torch.cat([mask, mask.new_ones(f_, 1)], dim=1)
    raise ValueError(f"position={position.value!r} is not valid here; expected 'grid' or 'frame'")


# --------------------------------------------------------------------------------------------------
# 4. Inter-frame OT merge


def uniform_segments(num_frames: int, num_clips: int) -> list[int]:
    """Clip lengths for ``num_frames`` cut into ``num_clips`` clips as even as possible (longer
    first). 32 frames / 8 clips -> 4 each, as released."""
    if num_frames < num_clips:
        raise ValueError(
            f"frames={num_frames} is fewer than num_clips={num_clips}; expected at least one frame per clip"
        )
    base, extra = divmod(num_frames, num_clips)
    return [base + (1 if i < extra else 0) for i in range(num_clips)]


def dynamic_segments(features: torch.Tensor, *, num_clips: int = _D.num_clips, threshold: float = 0.8) -> list[int]:
    """FastVID-style dynamic segmentation (SPEC): frame embedding = L2-normalised mean token;
    ``s_t = cos(e_t, e_{t+1})``; cut after the ``num_clips - 1`` lowest ``s_t`` and after every
    ``s_t < threshold``. features: (F, N, D) or (F, D). Returns clip lengths (sum F)."""
    check_tensor("features", features, ndim=(2, 3), floating=True)
    check_finite("features", features)
    emb = features.float().mean(1) if features.dim() == 3 else features.float()
    f_ = emb.shape[0]
    if f_ < num_clips:
        raise ValueError(f"frames={f_} is fewer than num_clips={num_clips}; expected at least one frame per clip")
    check_ratio("threshold", threshold)
    if f_ == 1:
        return [1]
    emb = Fn.normalize(emb, dim=-1)
    sim = (emb[:-1] * emb[1:]).sum(-1)  # (F-1,)
    cut = sim < threshold
    cut[torch.argsort(sim, stable=True)[: num_clips - 1]] = True
    ends = (torch.nonzero(cut).flatten() + 1).tolist() + [f_]
    return [e - s for s, e in zip([0] + ends[:-1], ends)]


def _masked_quantile(values: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise ``torch.quantile(values[valid], q)`` (linear interpolation, float64). (B, n) -> (B,)."""
    v = values.double().masked_fill(~valid, float("inf")).sort(-1).values
    count = valid.sum(-1)
    rank = q * (count - 1).clamp_min(0).double()
    below = rank.long()
    above = rank.ceil().long()
    lo = v.gather(1, below[:, None])[:, 0]
    hi = v.gather(1, above[:, None])[:, 0]
    return torch.lerp(lo, hi, rank - below.double())


def inter_frame_step(
    anchors: torch.Tensor,
    sources: torch.Tensor,
    *,
    offset: int,
    keep_ratio: float,
    anchor_valid: torch.Tensor | None = None,
    source_valid: torch.Tensor | None = None,
    sigma: float = _D.inter_sigma,
    epsilon: float = _D.inter_epsilon,
    scale: float = _D.inter_scale,
    max_iter: int = _D.sinkhorn_max_iter,
    tol: float = _D.sinkhorn_tol,
    sinkhorn_stop: SinkhornStop | str = _D.sinkhorn_stop,
    keep_rule: InterKeep | str = _D.inter_keep,
    keep_counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the inter-frame stage for a batch of independent clips (SPEC section 4, step 2).

    anchors: (C, z, D) current keyframe anchors Z; sources: (C, q, D) tokens Q of the frame
    ``offset`` frames after the keyframe; optional validity masks (C, z), (C, q) for padded clips.
    Returns ``(merged_anchors (C, z, D) float32, keep (C, q) bool)``: ``keep`` marks distinct source
    tokens, those whose best transport share ``m_i = max_j p_ij`` is low (``keep_rule="paper"``:
    ``m_i < quantile(m, keep_ratio)``; ``"exact"``: the ``round(keep_ratio * q)`` lowest); the rest
    are folded into Z. A clip with no source token keeps Z; one with no anchor keeps every source.
    ``keep_counts`` (C,) integers, when given, replace both rules: clip c keeps its
    ``keep_counts[c]`` lowest-m tokens (the exact-budget mode of :class:`AOTConfig`).
    """
    check_tensor("anchors", anchors, ndim=3, floating=True)
    c_, z, d = anchors.shape
    check_tensor("sources", sources, shape=(c_, None, d), floating=True)
    check_finite("anchors", anchors)
    check_finite("sources", sources)
    q = sources.shape[1]
    keep_ratio = check_ratio("keep_ratio", keep_ratio)
    keep_rule = check_choice("keep_rule", keep_rule, InterKeep)
    dev = anchors.device
    zv = torch.ones(c_, z, dtype=torch.bool, device=dev) if anchor_valid is None else check_mask("anchor_valid", anchor_valid, (c_, z))
    qv = torch.ones(c_, q, dtype=torch.bool, device=dev) if source_valid is None else check_mask("source_valid", source_valid, (c_, q))

    zf, qf = anchors.float(), sources.float()
    cos = torch.bmm(Fn.normalize(qf, dim=-1), Fn.normalize(zf, dim=-1).transpose(1, 2))  # (C, q, z)
    c_sim = 1.0 - cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    pair = qv[:, :, None] & zv[:, None, :]
    low = c_sim.masked_fill(~pair, float("inf")).amin(dim=(1, 2)) if q and z else c_sim.new_zeros(c_)
    c_sim = c_sim - torch.where(torch.isfinite(low), low, torch.zeros_like(low))[:, None, None]
    c_time = 1.0 - math.exp(-(offset**2) / (2.0 * sigma**2 + 1e-9))
    kernel = torch.exp(-(c_sim * c_time) / epsilon) * pair
    nq, nz = qv.sum(-1), zv.sum(-1)
    row = qv.float() / nq.clamp_min(1)[:, None].float()
    col = zv.float() / nz.clamp_min(1)[:, None].float()
    groups = torch.arange(c_, device=dev)  # every clip stops on its own
    stop = check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop).value
    plan = sinkhorn(kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=stop).plan
    p = plan / plan.sum(-1, keepdim=True).clamp_min(1e-9)  # (C, q, z)
    best = p.amax(-1) if z else p.new_zeros(c_, q)  # (C, q)
    if keep_counts is not None:
        check_tensor("keep_counts", keep_counts, shape=(c_,))
        order = torch.argsort(best.masked_fill(~qv, float("inf")), dim=-1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(q, device=dev).expand(c_, q))
        keep = rank < keep_counts.to(dev).long()[:, None]
    elif keep_rule is InterKeep.PAPER:
        tau = _masked_quantile(best, qv, keep_ratio)  # (C,)
        keep = best.double() < tau[:, None]
    else:
        # rank of each token by (m, position); keep the round(ratio * n) lowest
        order = torch.argsort(best.masked_fill(~qv, float("inf")), dim=-1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(q, device=dev).expand(c_, q))
        keep = rank < torch.round(keep_ratio * nq.double()).long()[:, None]
    keep = (keep | (nz == 0)[:, None]) & qv
    fold = p * (qv & ~keep)[:, :, None]
    merged = (zf + scale * torch.bmm(fold.transpose(1, 2), qf)) / (1.0 + scale * fold.sum(1))[..., None]
    return merged, keep


@dataclass
class _InterOut:
    tokens: torch.Tensor  # (T, D)
    kept: torch.Tensor  # (F, n) bool: positions emitted as they are (keyframe, distinct tokens)


def _inter_frame_video(
    features: torch.Tensor,
    mask: torch.Tensor,
    segments: Sequence[int],
    *,
    keep_ratio: float,
    scale: float,
    sigma: float,
    epsilon: float,
    max_iter: int,
    tol: float,
    sinkhorn_stop: SinkhornStop,
    keyframe_emit: KeyframeEmit,
    keep_rule: InterKeep,
    keep_counts: torch.Tensor | None = None,
) -> _InterOut:
    """Inter-frame stage of one video (features (F, n, D), mask (F, n), clip lengths).

    All clips advance together: step t processes frame ``keyframe + t`` of every clip longer than t,
    so the loop runs over frame offsets within a clip, never over frames or tokens. Tokens are
    padded to this video's widest frame only, so the result never depends on other videos.
    ``keep_counts`` (F,): distinct tokens each later frame keeps (exact-budget mode), or None.
    """
    f_, n, d = features.shape
    dev = features.device
    idx, valid, _ = _front_indices(mask)  # kept tokens first, row-major
    k = idx.shape[1]
    if k == 0:  # no frame keeps a token: nothing to emit
        return _InterOut(tokens=features.new_zeros(0, d), kept=torch.zeros_like(mask))
    ys = features.gather(1, idx[..., None].expand(f_, k, d))  # (F, k, D)
    starts = [sum(segments[:c]) for c in range(len(segments))]
    key = torch.tensor(starts, device=dev, dtype=torch.long)
    z = ys[key].float()  # (C, k, D)
    zv = valid[key]  # (C, k)
    emit = valid.clone()  # (F, k)
    for t in range(1, max(segments)):
        live = torch.tensor([c for c, length in enumerate(segments) if length > t], device=dev, dtype=torch.long)
        src = key[live] + t
        merged, keep = inter_frame_step(
            z[live], ys[src], offset=t, keep_ratio=keep_ratio, anchor_valid=zv[live], source_valid=valid[src],
            sigma=sigma, epsilon=epsilon, scale=scale, max_iter=max_iter, tol=tol, sinkhorn_stop=sinkhorn_stop,
            keep_rule=keep_rule, keep_counts=None if keep_counts is None else keep_counts[src],
        )
        z[live] = merged
        emit[src] = keep

    # Order of the pieces, doubled to leave room: frame f of clip c at 2(f + c); the merged Z after
    # the clip (paper) or in place of the keyframe (merged_once).
    once = keyframe_emit is KeyframeEmit.MERGED_ONCE
    if once:
        emit[key] = False
    position = [2 * (f + c) for c, (s, length) in enumerate(zip(starts, segments)) for f in range(s, s + length)]
    position += [2 * (s + c) - 1 if once else 2 * (s + length + c) - 1 for c, (s, length) in enumerate(zip(starts, segments))]
    order = torch.tensor(sorted(range(len(position)), key=position.__getitem__), device=dev, dtype=torch.long)
    pieces = torch.cat([ys, z.to(features.dtype)])[order]  # (F + C, k, D)
    flags = torch.cat([emit, zv])[order]  # (F + C, k)
    kept = torch.zeros(f_, n, dtype=torch.bool, device=dev).scatter_(1, idx, emit & valid)
    if once:
        kept[key] = mask[key]
    return _InterOut(tokens=pieces[flags], kept=kept)


def _check_segments(segments: Sequence[int], num_frames: int) -> list[int]:
    segs = list(segments)
    if not segs or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in segs) or sum(segs) != num_frames:
        raise ValueError(
            f"segments={segs!r} is not valid; expected positive clip lengths summing to the {num_frames} frames"
        )
    return segs


def merge_inter_frame(
    features: torch.Tensor,
    mask: torch.Tensor,
    *,
    keep_ratio: float,
    num_clips: int = _D.num_clips,
    segments: Sequence[int] | None = None,
    scale: float = _D.inter_scale,
    sigma: float = _D.inter_sigma,
    epsilon: float = _D.inter_epsilon,
    max_iter: int = _D.sinkhorn_max_iter,
    tol: float = _D.sinkhorn_tol,
    sinkhorn_stop: SinkhornStop | str = _D.sinkhorn_stop,
    keyframe_emit: KeyframeEmit | str = _D.keyframe_emit,
    keep_rule: InterKeep | str = _D.inter_keep,
) -> torch.Tensor:
    """Inter-frame OT merge of one video (SPEC section 4).

    features: (F, n, D) pooled tokens (with newlines already inserted for ``grid``); mask: (F, n)
    bool, the tokens each frame keeps. Frames are cut into ``num_clips`` clips as even as possible,
    or by ``segments`` (clip lengths). Per clip the keyframe's tokens become anchors Z; each later
    frame's distinct tokens are emitted and the rest folded into Z. Returns tokens (T, D): per clip
    the keyframe, the distinct tokens, then the merged Z (``keyframe_emit="paper"``, as released)
    or merged Z followed by the distinct tokens (``"merged_once"``). ``keep_rule`` see
    :func:`inter_frame_step`.
    """
    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    mask = check_mask("mask", mask, (f_, n))
    check_finite("features", features)
    keep_ratio = check_ratio("keep_ratio", keep_ratio)
    if segments is None:
        if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(f"num_clips={num_clips!r} is not valid; expected an integer >= 1")
        segs = uniform_segments(f_, num_clips)
    else:
        segs = _check_segments(segments, f_)
    return _inter_frame_video(
        features, mask, segs, keep_ratio=keep_ratio, scale=scale, sigma=sigma, epsilon=epsilon,
        max_iter=max_iter, tol=tol, sinkhorn_stop=check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop),
        keyframe_emit=check_choice("keyframe_emit", keyframe_emit, KeyframeEmit),
        keep_rule=check_choice("keep_rule", keep_rule, InterKeep),
    ).tokens


# --------------------------------------------------------------------------------------------------
# Whole pipeline


@dataclass
class CompressionResult:
    """What :func:`compress_video` returns for one video.

    tokens:        (T, D) visual tokens for the LLM, input dtype, in the order the LLM sees them
    anchor_mask:   (F, N) bool, AOT's anchors per frame; None for methods without anchors
    pooled_mask:   (F, n) bool, pooled cells kept (before newline insertion); every cell for the
                   baselines (their pooling keeps the whole grid)
    kept_mask:     (F, n') bool, positions emitted as tokens of their own (their value may have
                   absorbed merged tokens, as AOT's anchors do). n' = n, the pooled grid, for every
                   method except AOT with ``grid`` / ``frame`` newlines, whose mask is over its
                   pre-inter sequence, newline positions included (h x (w+1) / n+1), as released;
                   :attr:`kept_grid` gives the (F, n) view for every method
    merged_mask:   (F, n') bool, positions not emitted as themselves whose content was folded into
                   an emitted token; positions in neither mask were dropped. AOT: every position
                   not in ``kept_mask`` (a pruned token is folded into the anchors by the intra OT,
                   a repeated one into the keyframe anchors by the inter OT), so nothing is dropped
    segments:      clip lengths used by the temporal stage ([] when a method has none)
    stage_tokens:  token count after each stage: at least input and output
    retention:     paper definition: (T - newlines) / (F x pooled tokens per frame)
    pooled_grid:   (h, w) of the pooled frame (n = h*w)
    """

    tokens: torch.Tensor
    anchor_mask: torch.Tensor
    pooled_mask: torch.Tensor
    kept_mask: torch.Tensor
    segments: list[int]
    stage_tokens: dict[str, int] = field(default_factory=dict)
    retention: float = 0.0
    merged_mask: torch.Tensor | None = None
    pooled_grid: tuple[int, int] | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def _on_grid(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(F, n') -> (F, n): drop newline positions (a newline column, or one after the frame)."""
        if mask is None or self.pooled_grid is None:
            return mask
        h, w = self.pooled_grid
        f_, width = mask.shape
        if width == h * w:
            return mask
        if width == h * (w + 1):
            return mask.view(f_, h, w + 1)[:, :, :w].reshape(f_, h * w)
        return mask[:, : h * w]

    @property
    def kept_grid(self) -> torch.Tensor:
        """:attr:`kept_mask` over the pooled grid, (F, n), for every method."""
        out = self._on_grid(self.kept_mask)
        assert out is not None
        return out

    @property
    def merged_grid(self) -> torch.Tensor | None:
        """:attr:`merged_mask` over the pooled grid, (F, n), for every method."""
        return self._on_grid(self.merged_mask)


def _as_video_list(name: str, value: object, ndim: int) -> tuple[list[torch.Tensor], bool]:
    """Split a single video, a stacked batch or a list of videos into a list; report if batched."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name} is an empty list; expected at least one video")
        for i, v in enumerate(value):
            check_tensor(f"{name}[{i}]", v, ndim=ndim)
        return list(value), True
    check_tensor(name, value, ndim=(ndim, ndim + 1))
    assert isinstance(value, torch.Tensor)
    if value.dim() == ndim + 1:
        return list(value.unbind(0)), True
    return [value], False


def compress_video(
    features: torch.Tensor | Sequence[torch.Tensor],
    shallow_scores: torch.Tensor | Sequence[torch.Tensor],
    deep_scores: torch.Tensor | Sequence[torch.Tensor],
    *,
    config: AOTConfig,
    grid: tuple[int, int],
    image_newline: torch.Tensor | None = None,
) -> CompressionResult | list[CompressionResult]:
    """Run AOT on one video or a batch of videos.

    features: (F, N, D) projected frame tokens; shallow_scores, deep_scores: (F, N). A batch is
    either stacked ((B, F, N, D) and (B, F, N)) or a list of per-video tensors with their own F.
    ``image_newline`` (D,) is required for the ``grid`` and ``frame`` newline modes and for
    ``one_token`` with ``one_token_newline="append"``.

    Returns a :class:`CompressionResult` for a single video, a list of them for a batch. Each
    video's result is the same as if it were compressed alone.
    """
    if not isinstance(config, AOTConfig):
        raise ValueError(f"config must be an AOTConfig; got {type(config).__name__}")
    feats, batched = _as_video_list("features", features, 3)
    shal, _ = _as_video_list("shallow_scores", shallow_scores, 2)
    deep, _ = _as_video_list("deep_scores", deep_scores, 2)
    if not (len(feats) == len(shal) == len(deep)):
        raise ValueError(
            f"features, shallow_scores and deep_scores hold {len(feats)}, {len(shal)} and {len(deep)} videos; expected the same number"
        )
    n, d = feats[0].shape[1], feats[0].shape[2]
    for i, (x, s, t) in enumerate(zip(feats, shal, deep)):
        tag = f"[{i}]" if batched else ""
        check_tensor(f"features{tag}", x, shape=(None, n, d), floating=True)
        if x.shape[0] == 0:
            raise ValueError(f"features{tag} has 0 frames; expected at least 1")
        check_tensor(f"shallow_scores{tag}", s, shape=(x.shape[0], n), floating=True)
        check_tensor(f"deep_scores{tag}", t, shape=(x.shape[0], n), floating=True)
        check_finite(f"features{tag}", x)
        check_finite(f"shallow_scores{tag}", s)
        check_finite(f"deep_scores{tag}", t)
    h, w = check_grid(grid, n)
    cfg = config
    if cfg.num_anchors > n:
        raise ValueError(f"config.num_anchors={cfg.num_anchors} exceeds N={n} tokens per frame; expected <= {n}")
    nl_pos = cfg.newline_position
    needs_newline = nl_pos in (NewlinePosition.GRID, NewlinePosition.FRAME) or (
        nl_pos is NewlinePosition.ONE_TOKEN and cfg.one_token_newline is OneTokenNewline.APPEND
    )
    if needs_newline:
        if image_newline is None:
            raise ValueError(
                f"image_newline is None; expected a ({d},) tensor for newline_position={nl_pos.value!r}"
                + (" with one_token_newline='append'" if nl_pos is NewlinePosition.ONE_TOKEN else "")
            )
        check_tensor("image_newline", image_newline, shape=(d,), floating=True)
        check_finite("image_newline", image_newline)

    frames = [x.shape[0] for x in feats]
    if cfg.inter_frame:
        for i, f_ in enumerate(frames):
            if f_ < cfg.num_clips:
                tag = f" of video {i}" if batched else ""
                raise ValueError(
                    f"frames={f_}{tag} is fewer than num_clips={cfg.num_clips}; expected at least one frame per clip"
                )

    x = feats[0] if len(feats) == 1 else torch.cat(feats)  # (sum F, N, D)
    s_sh = shal[0] if len(shal) == 1 else torch.cat(shal)
    s_dp = deep[0] if len(deep) == 1 else torch.cat(deep)
    dev = x.device
    groups = torch.repeat_interleave(torch.arange(len(frames), device=dev), torch.tensor(frames, device=dev))

    exact = cfg.token_budget is not None
    anchor_mask = select_anchors(
        s_sh.to(dev), s_dp.to(dev), grid=(h, w), num_anchors=cfg.num_anchors, global_ratio=cfg.global_ratio,
        window=min(cfg.window, h, w), budget=cfg.anchor_budget,
    )
    update = _intra_anchor_update(
        x, anchor_mask, grid=(h, w), epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight,
        ot_weight=cfg.ot_weight, scale=cfg.effective_intra_scale, max_iter=cfg.sinkhorn_max_iter,
        tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop, ot_mass=cfg.ot_mass, groups=groups,
    )
    pooled, pooled_mask = _pool_merged(x, anchor_mask, update, grid=(h, w), mode=cfg.pool_mode, stride=cfg.pool_stride)
    del update
    ph, pw = pooled_grid((h, w), mode=cfg.pool_mode, stride=cfg.pool_stride)
    newlines_per_frame = ph if nl_pos is NewlinePosition.GRID else 1 if nl_pos is NewlinePosition.FRAME else 0
    offsets = [0]
    for f_ in frames:
        offsets.append(offsets[-1] + f_)
    segments = [_segments_for(cfg, feats[i], f_) if cfg.inter_frame else [] for i, f_ in enumerate(frames)]
    keep_counts = None
    if exact:
        pooled_mask, keep_counts = _exact_budget_masks(
            anchor_mask, frames, segments, cfg=cfg, grid=(h, w), newlines_per_frame=newlines_per_frame
        )
    seq, seq_mask = pooled, pooled_mask
    if nl_pos in (NewlinePosition.GRID, NewlinePosition.FRAME):
        assert image_newline is not None
        seq, seq_mask = insert_newlines(pooled, pooled_mask, image_newline, grid=(ph, pw), position=nl_pos)

    if cfg.inter_frame:
        tokens, kept_parts = [], []
        for i in range(len(frames)):  # per video: padding widths never mix videos
            sl = slice(offsets[i], offsets[i + 1])
            inter = _inter_frame_video(
                seq[sl], seq_mask[sl], segments[i], keep_ratio=cfg.keep_ratio, scale=cfg.effective_inter_scale,
                sigma=cfg.inter_sigma, epsilon=cfg.inter_epsilon, max_iter=cfg.sinkhorn_max_iter,
                tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop, keyframe_emit=cfg.keyframe_emit,
                keep_rule=cfg.inter_keep, keep_counts=None if keep_counts is None else keep_counts[sl],
            )
            tokens.append(inter.tokens)
            kept_parts.append(inter.kept)
        kept = torch.cat(kept_parts)
    else:
        per_frame = seq_mask.sum(-1)
        per_video = torch.zeros(len(frames), dtype=torch.long, device=dev).index_add_(0, groups, per_frame)
        tokens = list(seq[seq_mask].split(per_video.tolist()))
        kept = seq_mask

    append_one = nl_pos is NewlinePosition.ONE_TOKEN and cfg.one_token_newline is OneTokenNewline.APPEND
    if append_one:
        assert image_newline is not None
        nl = image_newline.to(device=dev, dtype=x.dtype)[None]
        tokens = [torch.cat([t, nl]) for t in tokens]

    results = []
    for i, f_ in enumerate(frames):
        sl = slice(offsets[i], offsets[i + 1])
        am, pm = anchor_mask[sl], pooled_mask[sl]
        newlines = newlines_per_frame * f_ + (1 if append_one else 0)
        t = int(tokens[i].shape[0])
        stage = {
            "input": f_ * n,
            "anchors": int(am.sum()),
            "pooled": int(pm.sum()),
            "newlines": newlines,
            "output": t,
        }
        results.append(
            CompressionResult(
                tokens=tokens[i], anchor_mask=am, pooled_mask=pm, kept_mask=kept[sl], segments=segments[i],
                stage_tokens=stage, retention=(t - newlines) / (f_ * ph * pw), merged_mask=~kept[sl],
                pooled_grid=(ph, pw),
            )
        )
    return results if batched else results[0]


# --------------------------------------------------------------------------------------------------
# Exact-budget mode (``AOTConfig.token_budget``): not in the release


def _segments_for(cfg: AOTConfig, features: torch.Tensor, frames: int) -> list[int]:
    if cfg.segmentation is Segmentation.DYNAMIC:
        return dynamic_segments(features, num_clips=cfg.num_clips, threshold=cfg.segment_threshold)
    return uniform_segments(frames, cfg.num_clips)


def _even_split(total: int, parts: int, cap: int | None = None) -> list[int]:
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
        return _even_split(budget, frames, grid_cells), [0] * frames
    clips = len(segments)
    e = 2 if emit_twice else 1
    nl = newlines_per_frame
    target = budget + nl * frames
    later_cap = (frames - clips) * (cells + nl)
    lo = max(-(-(target - later_cap) // e) - clips * nl, 0)
    hi = min(target // e - clips * nl, clips * grid_cells)
    key_cells = min(max(clips * cells, lo), hi) if lo <= hi else max(hi, 0)
    key_split = _even_split(key_cells, clips, grid_cells)
    rest = target - e * (sum(key_split) + clips * nl)
    later = _even_split(rest, frames - clips, cells + nl)
    cells_out, keep_out, j = [], [], 0
    for c, length in enumerate(segments):
        cells_out.append(key_split[c])
        keep_out.append(0)
        for _ in range(length - 1):
            cells_out.append(cells)
            keep_out.append(later[j])
            j += 1
    return cells_out, keep_out


def _exact_budget_masks(
    anchor_mask: torch.Tensor,
    frames: Sequence[int],
    segments: Sequence[Sequence[int]],
    *,
    cfg: AOTConfig,
    grid: tuple[int, int],
    newlines_per_frame: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled masks and per-frame keep counts of the exact-budget mode for a batch of videos.

    anchor_mask: (sum F, N). Each frame keeps its top cells by pooled anchor coverage (the float
    map the release thresholds at 0.5; ties: earlier position first), as many as
    :func:`exact_budget_counts` says; candidates per later frame ``round(num_anchors * n / N)``.
    Returns ``(pooled_mask (sum F, n) bool, keep_counts (sum F,) long)``.
    """
    assert cfg.token_budget is not None
    f_all, n_full = anchor_mask.shape
    ph, pw = pooled_grid(grid, mode=cfg.pool_mode, stride=cfg.pool_stride)
    n = ph * pw
    coverage, _ = pool_frames(
        anchor_mask.to(torch.float32)[..., None], anchor_mask, grid=grid, mode=cfg.pool_mode, stride=cfg.pool_stride
    )
    coverage = coverage[..., 0]  # (sum F, n)
    cells = min(max(round(cfg.num_anchors * n / n_full), 1), n)
    cell_counts, keep_counts = [], []
    for f_, segs in zip(frames, segments):
        c, k = exact_budget_counts(
            f_, segs, budget=round(cfg.token_budget * f_ * n), cells=cells, grid_cells=n,
            newlines_per_frame=newlines_per_frame, emit_twice=cfg.keyframe_emit is KeyframeEmit.PAPER,
            inter_frame=cfg.inter_frame,
        )
        cell_counts += c
        keep_counts += k
    dev = anchor_mask.device
    order = torch.argsort(coverage, dim=-1, descending=True, stable=True)  # (sum F, n)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=dev).expand(f_all, n))
    mask = rank < torch.tensor(cell_counts, device=dev)[:, None]
    return mask, torch.tensor(keep_counts, device=dev, dtype=torch.long)

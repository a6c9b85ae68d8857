"""AOT stage 4: the inter-frame OT merge (docs/algorithm.md §4) and the temporal segmentation.

Per clip the keyframe's tokens are anchors Z; each later frame's distinct tokens are kept and the
rest folded into Z. The stage is computed once as an :class:`InterPlan` (which tokens each frame
keeps, the transport shares that fold the others into Z) and applied to any sequence laid out like
the pooled frames (:meth:`InterPlan.apply`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as Fn

from ._checks import check_choice, check_finite, check_mask, check_ratio, check_tensor
from .config import AOTConfig, InterKeep, KeyframeEmit, SinkhornStop
from .ops import flat_rows, front_indices, gather_rows, rank_ascending
from .sinkhorn import sinkhorn

_D = AOTConfig()


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
    """FastVID-style dynamic segmentation (docs/algorithm.md): frame embedding = L2-normalised mean token;
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


def fold_into(z: torch.Tensor, q: torch.Tensor, fold: torch.Tensor, scale: float) -> torch.Tensor:
    """Anchors Z (C, z, D) float32 after folding sources Q (C, q, D) float32 with shares fold (C, q, z):
    ``(Z + s fold^T Q) / (1 + s fold^T 1)``."""
    num = torch.baddbmm(z, fold.transpose(1, 2), q, alpha=scale)  # Z + s fold^T Q in one product
    return num.div_((1.0 + scale * fold.sum(1))[..., None])


def _fold_live(z: torch.Tensor, live: torch.Tensor, q: torch.Tensor, fold: torch.Tensor, scale: float) -> torch.Tensor:
    """Z (C, z, D) with the clips ``live`` folded (:func:`fold_into`); while every clip is live, Z is
    folded whole, without a row selection."""
    if live.numel() == z.shape[0]:
        return fold_into(z, q, fold, scale)
    z[live] = fold_into(z[live], q, fold, scale)
    return z


def inter_decide(
    zf: torch.Tensor,
    qf: torch.Tensor,
    zv: torch.Tensor,
    qv: torch.Tensor,
    *,
    offset: int,
    keep_ratio: float,
    sigma: float,
    epsilon: float,
    max_iter: int,
    tol: float,
    sinkhorn_stop: SinkhornStop,
    keep_rule: InterKeep,
    keep_counts: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One inter-frame step's decision on validated float32 inputs (no checks):
    ``(fold (C, q, z) float32 shares of the folded sources, keep (C, q) bool)``."""
    c_, z, _ = zf.shape
    q = qf.shape[1]
    dev = zf.device
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
    plan = sinkhorn(
        kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=sinkhorn_stop.value, check=False
    ).plan
    p = plan / plan.sum(-1, keepdim=True).clamp_min(1e-9)  # (C, q, z)
    best = p.amax(-1) if z else p.new_zeros(c_, q)  # (C, q)
    if keep_counts is not None:
        keep = rank_ascending(best.masked_fill(~qv, float("inf"))) < keep_counts.to(dev).long()[:, None]
    elif keep_rule is InterKeep.PAPER:
        tau = _masked_quantile(best, qv, keep_ratio)  # (C,)
        keep = best.double() < tau[:, None]
    else:  # rank of each token by (m, position); keep the round(ratio * n) lowest
        target = torch.round(keep_ratio * nq.double()).long()[:, None]  # (C, 1)
        keep = rank_ascending(best.masked_fill(~qv, float("inf"))) < target
    keep = (keep | (nz == 0)[:, None]) & qv
    return p * (qv & ~keep)[:, :, None], keep


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
    """One step of the inter-frame stage for a batch of independent clips (docs/algorithm.md §4, step 2).

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
    dev = anchors.device
    zv = check_mask("anchor_valid", anchor_valid, (c_, z)) if anchor_valid is not None else None
    qv = check_mask("source_valid", source_valid, (c_, q)) if source_valid is not None else None
    zv = torch.ones(c_, z, dtype=torch.bool, device=dev) if zv is None else zv
    qv = torch.ones(c_, q, dtype=torch.bool, device=dev) if qv is None else qv
    if keep_counts is not None:
        check_tensor("keep_counts", keep_counts, shape=(c_,))
    zf, qf = anchors.float(), sources.float()
    fold, keep = inter_decide(
        zf, qf, zv, qv, offset=offset, keep_ratio=keep_ratio, sigma=sigma, epsilon=epsilon, max_iter=max_iter, tol=tol,
        sinkhorn_stop=check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop),  # type: ignore[arg-type]
        keep_rule=check_choice("keep_rule", keep_rule, InterKeep), keep_counts=keep_counts,  # type: ignore[arg-type]
    )
    return fold_into(zf, qf, fold, scale), keep


@dataclass
class InterPlan:
    """The inter-frame stage of one video as a replayable plan over its pooled sequence (F, n', D).

    index, valid: (F, k) each frame's kept positions (row-major) padded to the widest frame
    key:          (C,) keyframe of every clip
    steps:        per offset t within a clip: (live clips (c',), source frames (c',), fold shares
                  (c', k, k) float32) folding frame ``key + t`` into the anchors Z
    order, flags: the emission order of the F frames and C merged Z's, and which entries are emitted
    kept:         (F, n') bool, positions emitted as themselves
    """

    index: torch.Tensor
    valid: torch.Tensor
    key: torch.Tensor
    scale: float
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    order: torch.Tensor | None = None
    flags: torch.Tensor | None = None
    kept: torch.Tensor | None = None
    #: the tokens of the sequence the plan was computed on (what :meth:`apply` gives for it)
    tokens: torch.Tensor | None = None

    def _rows(self, seq: torch.Tensor) -> torch.Tensor:
        return gather_rows(seq.contiguous(), self.index)  # (F, k, D)

    def _emitted(self, ys: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``cat([ys, z])[order][flags]`` (T, D), without the concatenation: the rows of the frames and
        of the Z's are selected apart, each written once into its place."""
        assert self.order is not None and self.flags is not None
        k, d = self.index.shape[1], ys.shape[-1]
        flat = (self.order[:, None] * k + torch.arange(k, device=ys.device))[self.flags]  # into cat([ys, z])
        split = ys.shape[0] * k
        from_z = flat >= split
        at_y, at_z = torch.nonzero(~from_z)[:, 0], torch.nonzero(from_z)[:, 0]
        out = torch.empty(flat.shape[0], d, device=ys.device, dtype=ys.dtype)
        out.index_copy_(0, at_y, ys.reshape(-1, d).index_select(0, flat[at_y]))
        out.index_copy_(0, at_z, z.to(ys.dtype).reshape(-1, d).index_select(0, flat[at_z] - split))
        return out

    def apply(self, seq: torch.Tensor) -> torch.Tensor:
        """Tokens (T, D) of a sequence (F, n', D) laid out like the one the plan was computed on."""
        if self.index.shape[1] == 0:
            return seq.new_zeros(0, seq.shape[-1])
        ys = self._rows(seq)
        z = ys[self.key].float()
        for live, src, fold in self.steps:
            z = _fold_live(z, live, ys[src].float(), fold, self.scale)
        return self._emitted(ys, z)

    def sources(self, width: int) -> torch.Tensor:
        """(T,) flat index ``frame * width + j`` into the pooled sequences of every emitted token:
        a merged Z entry points at its keyframe anchor's own position."""
        if self.index.shape[1] == 0:
            return torch.zeros(0, dtype=torch.long, device=self.index.device)
        flat = flat_rows(self.index, width)
        assert self.order is not None and self.flags is not None
        return torch.cat([flat, flat[self.key]])[self.order][self.flags]


def inter_plan(
    seq: torch.Tensor,
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
    rows: torch.Tensor | None = None,
) -> InterPlan:
    """The inter-frame stage of one video (seq (F, n', D), mask (F, n'), clip lengths), validated
    inputs. All clips advance together: step t processes frame ``keyframe + t`` of every clip longer
    than t, so the loop runs over frame offsets within a clip, never over frames or tokens. Tokens
    are padded to this video's widest frame only, so the plan never depends on other videos.
    ``keep_counts`` (F,): distinct tokens each later frame keeps (exact-budget mode), or None.
    ``rows`` (F, k, D): the kept rows ``gather_rows(seq, front_indices(mask)[0])`` when the caller
    formed them without the sequence (``seq`` may then be None)."""
    f_, n = mask.shape
    dev = mask.device
    idx, valid, _ = front_indices(mask)  # kept tokens first, row-major
    starts = [sum(segments[:c]) for c in range(len(segments))]
    key = torch.tensor(starts, device=dev, dtype=torch.long)
    plan = InterPlan(idx, valid, key, scale)
    if idx.shape[1] == 0:  # no frame keeps a token: nothing to emit
        plan.kept = torch.zeros_like(mask)
        like = seq if rows is None else rows
        plan.tokens = like.new_zeros(0, like.shape[-1])
        return plan
    ys = plan._rows(seq) if rows is None else rows  # (F, k, D)
    z = ys[key].float()  # (C, k, D)
    zv = valid[key]  # (C, k)
    emit = valid.clone()  # (F, k)
    for t in range(1, max(segments)):
        live = torch.tensor([c for c, length in enumerate(segments) if length > t], device=dev, dtype=torch.long)
        src = key[live] + t
        qf = ys[src].float()
        every = live.numel() == len(segments)  # every clip still running: Z as it is, no row selection
        fold, keep = inter_decide(
            z if every else z[live], qf, zv if every else zv[live], valid[src], offset=t, keep_ratio=keep_ratio,
            sigma=sigma, epsilon=epsilon, max_iter=max_iter, tol=tol, sinkhorn_stop=sinkhorn_stop,
            keep_rule=keep_rule, keep_counts=None if keep_counts is None else keep_counts[src],
        )
        z = _fold_live(z, live, qf, fold, scale)
        emit[src] = keep
        plan.steps.append((live, src, fold))

    # Order of the pieces, doubled to leave room: frame f of clip c at 2(f + c); the merged Z after
    # the clip (paper) or in place of the keyframe (merged_once).
    once = keyframe_emit is KeyframeEmit.MERGED_ONCE
    if once:
        emit[key] = False
    position = [2 * (f + c) for c, (s, length) in enumerate(zip(starts, segments)) for f in range(s, s + length)]
    position += [
        2 * (s + c) - 1 if once else 2 * (s + length + c) - 1 for c, (s, length) in enumerate(zip(starts, segments))
    ]
    plan.order = torch.tensor(sorted(range(len(position)), key=position.__getitem__), device=dev, dtype=torch.long)
    plan.flags = torch.cat([emit, zv])[plan.order]  # (F + C, k)
    # the same operations as apply() on the same values: the tokens apply() gives for ``seq``
    plan.tokens = plan._emitted(ys, z)
    kept = torch.zeros(f_, n, dtype=torch.bool, device=dev).scatter_(1, idx, emit & valid)
    if once:
        kept[key] = mask[key]
    plan.kept = kept
    return plan


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
    """Inter-frame OT merge of one video (docs/algorithm.md §4).

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
    plan = inter_plan(
        features, mask, segs, keep_ratio=keep_ratio, scale=scale, sigma=sigma, epsilon=epsilon,
        max_iter=max_iter, tol=tol, sinkhorn_stop=check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop),  # type: ignore[arg-type]
        keyframe_emit=check_choice("keyframe_emit", keyframe_emit, KeyframeEmit),  # type: ignore[arg-type]
        keep_rule=check_choice("keep_rule", keep_rule, InterKeep),  # type: ignore[arg-type]
    )
    assert plan.tokens is not None
    return plan.tokens

"""AOT stage 2: the intra-frame OT merge (docs/algorithm.md §2), and its fusion with the model's
pooling (stage 3): pooling is linear, so the anchors' update is added to the pooled frame directly.

The merge is computed once as weights (:class:`IntraWeights`) and applied to any tensor laid out like
the features (:func:`apply_intra_pool`), so the same reduction serves the features and any other
per-token tensor of the video.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from ._checks import check_choice, check_finite, check_grid, check_mask, check_tensor
from .config import AOTConfig, OTMass, PoolMode, SinkhornStop
from .layout import (
    grid_distances,
    pool_tokens,
    pooled_grid,
    pooling_matrix,
    pooling_taps,
)
from .ops import flat_rows, front_indices, gather_rows, token_norms
from .sinkhorn import sinkhorn

_D = AOTConfig()


#: On a CPU the products run over chunks of frames whose features take at most this many bytes, so that
#: every temporary stays below glibc's mmap threshold and is reused from the heap instead of being
#: page-faulted afresh (on a 2-core VM, writing a fresh 334 MB buffer took 5x as long as writing a reused one).
CPU_CHUNK_BYTES = 24 * 2**20


def frame_chunks(x: torch.Tensor) -> list[slice]:
    """Slices of x's frames (dim 0) to run the per-frame products over: one slice on an accelerator
    (whose caching allocator reuses memory), chunks of at most :data:`CPU_CHUNK_BYTES` of features
    (at least one frame) on a CPU."""
    f_ = x.shape[0]
    if x.device.type != "cpu" or f_ == 0:
        return [slice(0, f_)]
    per_frame = max(x[0].numel() * x.element_size(), 1)
    step = max(CPU_CHUNK_BYTES // per_frame, 1)
    return [slice(s, min(s + step, f_)) for s in range(0, f_, step)]


@dataclass
class IntraWeights:
    """The intra-frame merge of a batch of frames as a linear map.

    index:  (F, k) anchor positions, ascending, padded to the largest anchor count
    valid:  (F, k) bool, real anchors (not padding)
    change: (F, N, k) float32, weight of token i in anchor j's change: the transport and
            nearest-neighbour weight ``w_ij`` of a pruned token, ``self_weight_j - 1`` at the anchor
            itself, 0 elsewhere (a padding slot's column is 0)
    rows:   (F, r) long or None, the pooled cells read on (:meth:`reading`), real ones first
    counts: (F,) long or None, how many of each frame's ``rows`` are real
    moved:  (F,) bool or None, the frames the merge changes (set by :meth:`reading`)

    New anchor value ``A_j = X_j + sum_i change_ij X_i = self_weight_j X_j + sum_i w_ij X_i``; other
    tokens unchanged.
    """

    index: torch.Tensor
    valid: torch.Tensor
    change: torch.Tensor
    rows: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    moved: torch.Tensor | None = None

    def frames(self, sl: slice) -> IntraWeights:
        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[sl]

        return IntraWeights(
            self.index[sl], self.valid[sl], self.change[sl], part(self.rows), part(self.counts), part(self.moved)
        )

    def reading(self, rows: torch.Tensor, counts: torch.Tensor) -> IntraWeights:
        """These weights, marked as read on only at the pooled cells ``rows`` (F, r) of each frame, the
        first ``counts[f]`` of them real (:func:`~visionzip.ops.front_indices` of the kept cells): on a
        CPU in float32, :func:`apply_intra_pool` then forms those cells by :func:`kept_cells`, with or
        without ``rows``, so both give them bit for bit alike. ``moved`` (F,) bool: the frames the merge
        changes, i.e. whose change is not all zero (a frame whose tokens are all anchors, or a merge
        configured as the identity, is pooled as it is)."""
        moved = self.change.ne(0).flatten(1).any(1) if self.moved is None else self.moved
        return replace(self, rows=rows, counts=counts, moved=moved)

    def anchor_delta(self, x: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """(c, k, D) float32 for the frames x[sl]: each anchor's merged value minus its value in x,
        one product ``change^T X`` in x's dtype, the anchor's own term included (no gather, no merged
        copy). Exactly zero at padding slots.

        On a CPU the product runs frame by frame (``mm``, threaded within each frame): at LLaVA shapes
        that took 0.85x the time of the batched ``bmm`` on a 2-core VM. Elsewhere it is one ``bmm``."""
        change_t = self.change[sl].transpose(1, 2).to(x.dtype)  # (c, k, N) view
        xs = x[sl]
        if x.device.type != "cpu":
            return torch.bmm(change_t, xs).float()
        if torch.is_grad_enabled() and (xs.requires_grad or change_t.requires_grad):  # same kernel, no out=
            return torch.stack([torch.mm(c_f, x_f) for c_f, x_f in zip(change_t, xs)]).float()
        out = torch.empty(change_t.shape[0], change_t.shape[1], xs.shape[2], dtype=x.dtype, device=x.device)
        for c_f, x_f, o_f in zip(change_t, xs, out):
            torch.mm(c_f, x_f, out=o_f)
        return out.float()

    def merged_anchors(self, x: torch.Tensor) -> torch.Tensor:
        """(F, k, D) float32: the anchors' merged values for values x (F, N, D)."""
        return self.anchor_delta(x).add_(gather_rows(x, self.index).float())


def kept_cells_apply(x: torch.Tensor) -> bool:
    """Whether :func:`apply_intra_pool` forms marked kept cells of x by :func:`kept_cells`: on a CPU,
    in float32 (elsewhere pooled frames plus the anchors' correction)."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def kept_cells(
    x: torch.Tensor, weights: IntraWeights, grid: tuple[int, int], mode: PoolMode, stride: int
) -> torch.Tensor:
    """(F, r, D): the pooled cells ``weights.rows`` of the merged frames of contiguous float32 x
    (F, N, D), for a linear pooling, as one product per frame over its real cells. A kept cell c is
    ``sum_i M[i, c] X'_i`` for the pooling matrix M and the merged frame X' = X + change^T X at the
    anchors, i.e. ``sum_i (M[i, c] + sum_j change_ij M[a_j, c]) X_i``: the (N, r) mixing matrix is
    formed first (an (N, k) x (k, r) product, a few MFLOP), then applied to the frame, so neither
    the anchors' changes nor the pooled taps are formed; a moved frame's rows past ``counts[f]`` are
    0. A frame the merge leaves as it is (``weights.moved`` False) is the model's pooling of it at
    every row, bit for bit."""
    assert weights.rows is not None and weights.counts is not None and weights.moved is not None
    f_, n_tok, d = x.shape
    rows = weights.rows
    r, k = rows.shape[1], weights.index.shape[1]
    counts = weights.counts.tolist()
    moved = weights.moved.tolist()
    still = [f for f, m in enumerate(moved) if not m]
    plain = None
    if still:  # the model's pooling of the frames the merge leaves alone (all of them at retention 1.0)
        frames = x if len(still) == f_ else x[still]
        plain = gather_rows(pool_tokens(frames, grid, mode, stride).contiguous(), rows[still])
    mix = None
    if len(still) < f_:  # (F, N, r): M[i, c] + sum_j change_ij M[a_j, c]
        matrix = pooling_matrix(grid, mode, stride, x.device)  # (N, n)
        cols = matrix.index_select(1, rows.reshape(-1)).view(n_tok, f_, r).transpose(0, 1)  # (F, N, r) view
        mix = torch.baddbmm(cols, weights.change, cols.gather(1, weights.index[..., None].expand(f_, k, r)))
    grad = torch.is_grad_enabled() and (x.requires_grad or (mix is not None and mix.requires_grad))
    if grad:  # the same kernels without out=
        zero = x.new_zeros(r, d)
        plain_rows = iter(plain) if plain is not None else iter(())
        return torch.stack([
            torch.cat([torch.mm(mix[f, :, :m].t(), x[f]), zero[m:]]) if moved[f] else next(plain_rows)  # type: ignore[index]
            for f, m in enumerate(counts)
        ])
    out = torch.empty(f_, r, d, device=x.device, dtype=x.dtype)
    for f, m in enumerate(counts):
        if moved[f]:
            torch.mm(mix[f, :, :m].t(), x[f], out=out[f, :m])  # type: ignore[index]
            out[f, m:] = 0
    if plain is not None:
        out[still] = plain
    return out


def anchor_dots(x: torch.Tensor, index: torch.Tensor, *, inplace: bool = True) -> torch.Tensor:
    """(F, N, k) float32 dot products of every token of contiguous x (F, N, D) with its frame's anchors
    ``x[f, index[f, j]]``: one ``bmm`` per chunk of frames (:func:`frame_chunks`) written into one map
    (``inplace=False``, for autograd: the same product, its result copied in)."""
    f_, n, _ = x.shape
    out = torch.empty(f_, n, index.shape[1], device=x.device, dtype=torch.float32)
    for sl in frame_chunks(x):
        anchors = gather_rows(x[sl], index[sl])  # (c, k, D)
        if inplace and x.dtype == torch.float32:
            torch.bmm(x[sl], anchors.transpose(1, 2), out=out[sl])
        else:
            out[sl] = torch.bmm(x[sl], anchors.transpose(1, 2))
    return out


def intra_weights(
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
    sinkhorn_stop: SinkhornStop,
    ot_mass: OTMass,
    groups: torch.Tensor | None,
    norms: torch.Tensor | None = None,
) -> IntraWeights | None:
    """The intra-frame merge's weights for validated inputs (no checks); None when no frame has an
    anchor. A frame without pruned tokens keeps its anchors exactly (self weight 1). ``norms``: the
    features' (F, N) float32 token norms when the caller has them (the input check computes them).

    The cosines are one product per chunk of frames (:func:`frame_chunks`) written into one (F, N, k)
    map, and without autograd every later step on that map works in place on it."""
    f_, n, d = features.shape
    h, w = grid
    idx_r, valid_r, n_r = front_indices(anchor_mask)  # (F, k) ascending; one host sync per video batch
    k = idx_r.shape[1]
    if k == 0:
        return None
    pruned = ~anchor_mask  # (F, N)
    n_p = pruned.sum(-1)  # (F,)
    all_valid = bool(valid_r.all())
    x = features.contiguous()
    if norms is None:
        norms = token_norms(x)
    # autograd keeps the intermediates: with a gradient every step is out of place (same arithmetic)
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or norms.requires_grad))

    cos = anchor_dots(x, idx_r, inplace=inplace)  # (F, N, k)
    x_norm = norms.clamp_min(1e-12)  # (F, N)
    r_norm = x_norm.gather(1, idx_r)  # (F, k)
    # dist[f, i, j] = D[index[f, j], i], gathered from D's transpose so that k is innermost, as in cos
    dist = _scaled_distances(h, w, float(position_weight), x.device).index_select(1, idx_r.reshape(-1))
    dist = dist.view(n, f_, k).transpose(0, 1)  # (F, N, k)
    keep = pruned[:, :, None]
    if inplace:  # one map: cosine, then the kernel in place on it
        cos.div_(x_norm[:, :, None]).div_(r_norm[:, None, :])
        if not all_valid:  # padding slots: never the nearest anchor, and kernel exp(-inf) = 0
            cos.masked_fill_(~valid_r[:, None, :], float("-inf"))
        nearest = cos.argmax(-1)  # (F, N) nearest anchor by cosine (read for pruned tokens only)
        # (cos - 1) - dist is -((1 - cos) + dist) bit for bit (rounding is symmetric under negation)
        kernel = cos.sub_(1.0).sub_(dist).div_(epsilon).exp_().mul_(keep)
    else:
        cos = cos / x_norm[:, :, None] / r_norm[:, None, :]
        if not all_valid:
            cos = cos.masked_fill(~valid_r[:, None, :], float("-inf"))
        nearest = cos.argmax(-1)
        kernel = torch.exp(-((1.0 - cos) + dist) / epsilon) * keep
    # kernel = exp(-((1 - cos) + position_weight * dist) / epsilon) on pruned rows, 0 elsewhere
    del cos, dist
    row = pruned.float() / n_p.clamp_min(1)[:, None].float()  # (F, N)
    col = valid_r.float() / n_r.clamp_min(1)[:, None].float()  # (F, k)
    plan = sinkhorn(
        kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=sinkhorn_stop.value, check=False,
        overwrite=inplace,
    ).plan
    del kernel
    if ot_mass is OTMass.PER_TOKEN:  # every pruned token carries mass 1
        plan = plan.mul_(n_p[:, None, None].float()) if inplace else plan * n_p[:, None, None].float()

    # the nearest-neighbour update without a one-hot map: counts and weights by scatter on the plan
    hit = pruned.float()  # (F, N)
    nn_count = torch.zeros(f_, k, device=x.device).scatter_add_(1, nearest, hit)  # (F, k)
    ot_den = 1.0 + scale * plan.sum(1)  # (F, k)
    nn_den = 1.0 + nn_count
    self_weight = ot_weight / ot_den + (1.0 - ot_weight) / nn_den  # (F, k)
    ot_scale = (ot_weight * scale / ot_den)[:, None, :]
    nn_weight = (((1.0 - ot_weight) / nn_den).gather(1, nearest) * hit)[..., None]  # (F, N, 1): 0 on anchor rows
    untouched = (n_p == 0)[:, None]  # every token an anchor: the frame passes through unchanged
    # padding slots (no anchor) get self weight exactly 1: their column of the change stays 0
    self_weight = torch.where(untouched | ~valid_r, torch.ones_like(self_weight), self_weight)
    at_anchor = (idx_r[:, None, :], (self_weight - 1.0)[:, None, :])  # anchor j's own row: self_weight_j - 1
    if inplace:
        change = plan.mul_(ot_scale).scatter_add_(2, nearest[..., None], nn_weight).scatter_(1, *at_anchor)
    else:
        change = (plan * ot_scale).scatter_add(2, nearest[..., None], nn_weight).scatter(1, *at_anchor)
    return IntraWeights(idx_r, valid_r, change)


@functools.lru_cache(maxsize=64)
def _scaled_distances(h: int, w: int, position_weight: float, device: torch.device) -> torch.Tensor:
    """(N, N) the transpose of ``position_weight * grid_distances`` (contiguous), built once per (grid,
    weight, device): entry (i, j) is the scaled distance ``D[j, i]`` (``cdist`` is symmetric in value
    but not always bit for bit, and the release reads the anchor's row)."""
    return (position_weight * grid_distances(h, w, device)).T.contiguous()


def apply_intra_pool(
    x: torch.Tensor,
    weights: IntraWeights | None,
    grid: tuple[int, int],
    mode: PoolMode,
    stride: int,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's pooling of x (F, N, D) with the anchors replaced by their merged values, without
    building the merged frames: pool(X') = pool(X) + M[:, anchors] (merged - anchors) for a linear
    pooling M (``max`` pooling materialises the merged frames). Runs over chunks of frames
    (:func:`frame_chunks`). Returns (F, n, D) in x's dtype.

    ``rows`` (F, k) int64 positions of the pooled frames: returns only those rows, (F, k, D), equal
    to ``gather_rows`` of the full result bit for bit: each chunk's correction is added where the
    chunk was pooled (the same ``out=`` products, ``out`` the pooled chunk itself) and its rows are
    picked from there, so the (F, n, D) result is never formed.

    Weights marked as read at those rows (:meth:`IntraWeights.reading`, what ``compress_video``
    passes), on a CPU in float32 and a linear pooling: the rows are :func:`kept_cells`, one product
    per frame over its real kept cells (padding rows 0); the whole result then carries the same rows
    at those cells, so the two still agree bit for bit on every real kept cell."""
    if weights is None or mode is PoolMode.MAX:
        full = pool_tokens(x, grid, mode, stride) if weights is None else _max_pool_merged(x, weights, grid, stride)
        return full if rows is None else gather_rows(full.contiguous(), rows)
    x = x.contiguous()
    f_, _, d = x.shape
    # the cells read on, formed straight from the frames (the rows given are the ones marked)
    product = weights.rows is not None and kept_cells_apply(x)
    if product and rows is not None and (rows is weights.rows or torch.equal(rows, weights.rows)):
        return kept_cells(x, weights, grid, mode, stride)
    ph, pw = pooled_grid(grid, mode=mode, stride=stride)
    n = ph * pw
    cells, taps = pooling_taps(grid, mode, stride, x.device)
    one_tap = cells.shape[1] == 1
    matrix = None if one_tap else pooling_matrix(grid, mode, stride, x.device)  # (N, n)
    grad = torch.is_grad_enabled() and (x.requires_grad or weights.change.requires_grad)
    # written through out= (float32, no autograd): into the output, or (rows) into the pooled chunk itself
    direct = x.dtype == torch.float32 and not grad
    out = torch.empty(f_, n, d, device=x.device, dtype=x.dtype) if rows is None else None
    picked = None if rows is None else torch.empty(f_, rows.shape[1], d, device=x.device, dtype=x.dtype)
    scratch: torch.Tensor | None = None
    # on a CPU the correction's product skips the pooling matrix's zeros (a dense product would be
    # ~99 % multiplications by zero); on an accelerator it is one dense product
    sparse = not one_tap and x.device.type == "cpu" and x.dtype == torch.float32
    for sl in frame_chunks(x):
        delta = weights.anchor_delta(x, sl)  # (c, k, D) float32, zero at padding slots
        index = weights.index[sl]
        c = index.shape[0]
        pooled = pool_tokens(x[sl], grid, mode, stride)
        dest = None
        if direct and out is not None:
            dest = out[sl]
        elif direct and mode is not PoolMode.NONE:
            dest = pooled  # a fresh pooled chunk: corrected where it lies
        elif direct:  # 'none' pools to x itself, never written to: one reused buffer
            scratch = torch.empty(c, n, d, device=x.device, dtype=x.dtype) if scratch is None else scratch
            dest = scratch[:c]  # the first chunk is the largest
        if one_tap:  # each token feeds one cell (average, none): add each anchor's delta to its cell
            acc = dest.copy_(pooled) if dest is not None else pooled.to(torch.float32, copy=True)  # 'none': x itself
            target = flat_rows(cells[index, 0], n)  # (c, k)
            acc.view(-1, d).index_add_(0, target.reshape(-1), delta.mul_(taps[index, 0][..., None]).view(-1, d))
            value = acc
        elif sparse:  # pooled + M_a^T delta with M_a's few nonzeros only (up to 4 cells per anchor)
            w = taps[index]  # (c, k, P)
            m_sparse = _correction_matrix(flat_rows(cells[index], n), w, w > 0, c * n)
            if dest is not None:
                torch.addmm(pooled.reshape(-1, d), m_sparse, delta.view(-1, d), out=dest.view(-1, d))
                value = dest
            else:  # the same product, its result copied in (autograd refuses out=)
                value = torch.addmm(pooled.reshape(-1, d), m_sparse, delta.view(-1, d)).view(c, n, d)
        else:
            m = matrix[index].transpose(1, 2)  # (c, n, k)
            if dest is not None:
                value = torch.baddbmm(pooled, m, delta, out=dest)  # pooled + M_a^T delta, written in place
            else:
                value = torch.baddbmm(pooled.float(), m, delta)
        if picked is None:
            if dest is None:
                out[sl] = value
        elif direct:  # value is x's dtype: its kept rows selected straight into the output
            gather_rows(value, rows[sl], out=picked[sl])  # type: ignore[index]
        else:
            picked[sl] = gather_rows(value, rows[sl]).to(x.dtype)  # type: ignore[index]
    if picked is not None:
        return picked
    assert out is not None
    if product:  # the real kept cells of the frames the merge moves, as kept_cells forms them
        assert weights.rows is not None and weights.counts is not None and weights.moved is not None
        real = torch.arange(weights.rows.shape[1], device=x.device)[None, :] < weights.counts[:, None]
        real &= weights.moved[:, None]
        at = flat_rows(weights.rows, n)[real]
        kept = kept_cells(x, weights, grid, mode, stride)[real]
        if grad:
            return out.view(f_ * n, d).index_copy(0, at, kept).view(f_, n, d)
        out.view(f_ * n, d).index_copy_(0, at, kept)
    return out


def _correction_matrix(targets: torch.Tensor, w: torch.Tensor, use: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The sparse (num_rows, c k) matrix of the anchors' correction: entry ``(targets[f, j, p], f k + j)``
    = ``w[f, j, p]`` wherever ``use``, in that order (targets, w, use: (c, k, P))."""
    c, k, _ = w.shape
    cols = torch.arange(c * k, device=w.device).view(c, k, 1).expand_as(w)[use]
    return torch.sparse_coo_tensor(
        torch.stack([targets[use], cols]), w[use], (num_rows, c * k), check_invariants=False
    )


def _max_pool_merged(x: torch.Tensor, weights: IntraWeights, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """``max`` pooling of the merged frames (not linear: the merged frames are formed)."""
    x = x.contiguous()
    f_, n_full, d = x.shape
    merged = weights.merged_anchors(x)
    full = x.clone()
    flat = flat_rows(weights.index, n_full)[weights.valid]
    full.view(-1, d)[flat] = merged.to(x.dtype)[weights.valid]
    return pool_tokens(full, grid, PoolMode.MAX, stride)


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
    update (docs/algorithm.md §2). Pruned positions keep their values; anchors are overwritten.

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
    h, w = check_grid(grid, n)
    mask = check_mask("anchor_mask", anchor_mask, (f_, n))
    check_finite("features", features)
    if groups is not None:
        check_tensor("groups", groups, shape=(f_,))
    update = intra_weights(
        features, mask, grid=(h, w), epsilon=epsilon, position_weight=position_weight, ot_weight=ot_weight,
        scale=scale, max_iter=max_iter, tol=tol, sinkhorn_stop=check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop),  # type: ignore[arg-type]
        ot_mass=check_choice("ot_mass", ot_mass, OTMass), groups=groups,  # type: ignore[arg-type]
    )
    out = features.clone()
    if update is None:
        return out
    merged = update.merged_anchors(features).to(features.dtype)
    k = update.index.shape[1]
    if bool(update.valid.all()):
        out.scatter_(1, update.index[..., None].expand(f_, k, d), merged)
    else:
        flat = flat_rows(update.index, n)[update.valid]
        out.view(f_ * n, d)[flat] = merged[update.valid]
    return out

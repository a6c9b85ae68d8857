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
    cell_pooling_exact,
    grid_distances,
    pool_cells,
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
    focus:  (F, k) bool or None, the anchors whose merged values are read on (:meth:`focused`): on a
            CPU their changes are one product per frame and the others' a second one, so a caller that
            reads only the focused anchors (:func:`apply_intra_pool` with ``rows``) skips the second

    New anchor value ``A_j = X_j + sum_i change_ij X_i = self_weight_j X_j + sum_i w_ij X_i``; other
    tokens unchanged.
    """

    index: torch.Tensor
    valid: torch.Tensor
    change: torch.Tensor
    focus: torch.Tensor | None = None

    def frames(self, sl: slice) -> IntraWeights:
        focus = None if self.focus is None else self.focus[sl]
        return IntraWeights(self.index[sl], self.valid[sl], self.change[sl], focus)

    def focused(self, rows: torch.Tensor, grid: tuple[int, int], mode: PoolMode, stride: int) -> IntraWeights:
        """These weights focused on the anchors that feed one of the pooled cells ``rows`` (F, r) of
        each frame (:func:`feeding_anchors`): the merge is unchanged, only how its products are split."""
        return replace(self, focus=feeding_anchors(self.index, self.valid, rows, grid, mode, stride))

    def anchor_delta(self, x: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """(c, k, D) float32 for the frames x[sl]: each anchor's merged value minus its value in x,
        one product ``change^T X`` in x's dtype, the anchor's own term included (no gather, no merged
        copy). Exactly zero at padding slots.

        On a CPU the product runs frame by frame (``mm``, threaded within each frame): at LLaVA shapes
        that took 0.85x the time of the batched ``bmm`` on a 2-core VM; with a :attr:`focus`, as two
        products per frame, the focused anchors' (:meth:`focus_delta`) and the others'. Elsewhere it
        is one ``bmm``."""
        change = self.change[sl]
        xs = x[sl]
        if x.device.type != "cpu":
            return torch.bmm(change.transpose(1, 2).to(x.dtype), xs).float()
        if self.focus is not None:
            focus = self.focus[sl]
            c, k = focus.shape
            rows = torch.cat([_selected_delta(change, xs, focus), _selected_delta(change, xs, ~focus)])
            order = torch.cat([focus.reshape(-1).nonzero()[:, 0], (~focus).reshape(-1).nonzero()[:, 0]])
            return rows.index_select(0, torch.argsort(order)).view(c, k, -1)  # back to (frame, anchor) order
        change_t = change.transpose(1, 2).to(x.dtype)  # (c, k, N) view
        if torch.is_grad_enabled() and (xs.requires_grad or change_t.requires_grad):  # same kernel, no out=
            return torch.stack([torch.mm(c_f, x_f) for c_f, x_f in zip(change_t, xs)]).float()
        out = torch.empty(change_t.shape[0], change_t.shape[1], xs.shape[2], dtype=x.dtype, device=x.device)
        for c_f, x_f, o_f in zip(change_t, xs, out):
            torch.mm(c_f, x_f, out=o_f)
        return out.float()

    def focus_delta(self, x: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """(m, D) float32: the rows of :meth:`anchor_delta` at the focused anchors of the frames x[sl]
        (frame by frame, ascending), bit for bit, from their product alone (CPU, with a focus)."""
        assert self.focus is not None and x.device.type == "cpu"
        return _selected_delta(self.change[sl], x[sl], self.focus[sl])

    def merged_anchors(self, x: torch.Tensor) -> torch.Tensor:
        """(F, k, D) float32: the anchors' merged values for values x (F, N, D)."""
        return self.anchor_delta(x).add_(gather_rows(x, self.index).float())


def _selected_delta(change: torch.Tensor, xs: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """(m, D) float32: ``change[f][:, j]^T xs[f]`` for every selected (f, j) of sel (c, k), frame by
    frame and ascending in j, one ``mm`` per frame over its selected columns (the only kernel either
    split of :meth:`IntraWeights.anchor_delta` uses, so a row is the same whichever asks for it)."""
    counts = sel.sum(1).tolist()
    cols = sel.nonzero()[:, 1]
    d = xs.shape[2]
    grad = torch.is_grad_enabled() and (xs.requires_grad or change.requires_grad)
    out = None if grad else torch.empty(sum(counts), d, dtype=xs.dtype, device=xs.device)
    parts, start = [], 0
    for f, m in enumerate(counts):
        if m == 0:
            continue
        a = change[f].index_select(1, cols[start:start + m]).to(xs.dtype).t()  # (m, N) view
        if out is None:
            parts.append(torch.mm(a, xs[f]))
        else:
            torch.mm(a, xs[f], out=out[start:start + m])
        start += m
    if out is None:
        out = torch.cat(parts) if parts else xs.new_zeros(0, d)
    return out.float()


def feeding_anchors(
    index: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, grid: tuple[int, int], mode: PoolMode, stride: int
) -> torch.Tensor:
    """(F, k) bool: the real anchors ``index`` (F, k) that feed, with a nonzero pooling weight, one of
    the pooled cells ``rows`` (F, r) of their frame. At 10 % retention about a third of the anchors
    feed a kept cell; the others' merged values are never read when only the kept cells are."""
    f_, k = index.shape
    ph, pw = pooled_grid(grid, mode=mode, stride=stride)
    cells, taps = pooling_taps(grid, mode, stride, index.device)
    kept = torch.zeros(f_, ph * pw, dtype=torch.bool, device=index.device).scatter_(1, rows, True)
    at = cells[index]  # (F, k, P)
    hit = kept.gather(1, at.view(f_, -1)).view_as(at) & (taps[index] > 0)
    return hit.any(-1) & valid


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
    dist = _scaled_distances(h, w, float(position_weight), x.device)[idx_r].transpose(1, 2)  # (F, N, k)
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
    """(N, N) ``position_weight * grid_distances`` (symmetric), built once per (grid, weight, device)."""
    return position_weight * grid_distances(h, w, device)


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
    picked from there, so the (F, n, D) result is never formed (a caller that reads only the kept
    tokens skips writing the whole pooled video)."""
    if weights is None or mode is PoolMode.MAX:
        full = pool_tokens(x, grid, mode, stride) if weights is None else _max_pool_merged(x, weights, grid, stride)
        return full if rows is None else gather_rows(full.contiguous(), rows)
    x = x.contiguous()
    f_, _, d = x.shape
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
    # rows only, and the kept cells can be pooled alone exactly as the model pools whole frames: the
    # rest of each frame is never pooled (at 10 % retention about 1 cell in 6 is read)
    cells_only = (
        picked is not None and direct and (sparse or one_tap)
        and cell_pooling_exact(grid, mode, stride, d, x.dtype, x.device)
    )
    # focused weights whose focus holds every anchor feeding a kept cell: only those anchors' changes are formed
    focus = None
    if cells_only and weights.focus is not None:
        assert rows is not None
        needed = feeding_anchors(weights.index, weights.valid, rows, grid, mode, stride)
        focus = None if bool((needed & ~weights.focus).any()) else weights.focus
    for sl in frame_chunks(x):
        index = weights.index[sl]
        c, k = index.shape
        if cells_only:
            assert picked is not None and rows is not None
            if focus is not None:  # (m, D): the focused anchors' rows of the change, frame by frame
                rows_of = focus[sl]
                at_row = torch.where(rows_of, rows_of.reshape(-1).cumsum(0).view(c, k) - 1, -1)
                delta = weights.focus_delta(x, sl)
            else:
                at_row = torch.arange(c * k, device=x.device).view(c, k)
                delta = weights.anchor_delta(x, sl).view(c * k, d)
            _kept_cells_corrected(
                x[sl], delta, at_row, index, rows[sl], cells, taps, grid, mode, stride, n, out=picked[sl]
            )
            continue
        delta = weights.anchor_delta(x, sl)  # (c, k, D) float32, zero at padding slots
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
    return out if picked is None else picked


def _kept_cells_corrected(
    x: torch.Tensor,
    delta: torch.Tensor,
    at_row: torch.Tensor,
    index: torch.Tensor,
    rows: torch.Tensor,
    cells: torch.Tensor,
    taps: torch.Tensor,
    grid: tuple[int, int],
    mode: PoolMode,
    stride: int,
    n: int,
    *,
    out: torch.Tensor,
) -> None:
    """The rows ``rows`` (c, r) of the corrected pooled frames (n cells) of x (c, N, D) float32, written into out
    (c, r, D): those cells pooled alone (:func:`~visionzip.layout.pool_cells`), then the same
    correction as on whole frames restricted to them: the same products, entry for entry in the same
    order, minus those landing on cells not kept, so each row is the whole result's row bit for bit.
    ``delta`` (m, D): anchors' changes, anchor (f, j)'s at row ``at_row[f, j]`` (every real anchor
    feeding a kept cell has one; -1: none, as for padding slots, whose change is 0)."""
    c, k = index.shape
    r, d = rows.shape[1], x.shape[2]
    pool_cells(x, grid, mode, stride, rows, out=out)
    where = torch.full((c, n), -1, dtype=torch.long, device=x.device)  # cell -> its position among rows, or -1
    where.scatter_(1, rows, torch.arange(r, device=x.device).expand(c, r))
    at = where.gather(1, cells[index].view(c, -1)).view(c, k, -1)  # (c, k, P)
    w = taps[index]  # (c, k, P)
    hit = (w > 0) & (at >= 0) & (at_row >= 0)[..., None]  # padding slots (change 0) have no row
    dest = out.view(c * r, d)
    if cells.shape[1] == 1:  # one cell per token (average): each kept anchor's scaled delta added to its row
        one = hit[..., 0]
        target = flat_rows(at[..., 0], r)[one]
        dest.index_add_(0, target, delta.index_select(0, at_row[one]).mul_(w[..., 0][one][:, None]))
        return
    m_sparse = _correction_matrix(flat_rows(at, r), w, hit, c * r, cols=at_row, num_cols=delta.shape[0])
    torch.addmm(dest, m_sparse, delta, out=dest)


def _correction_matrix(
    targets: torch.Tensor,
    w: torch.Tensor,
    use: torch.Tensor,
    num_rows: int,
    *,
    cols: torch.Tensor | None = None,
    num_cols: int | None = None,
) -> torch.Tensor:
    """The sparse (num_rows, num_cols) matrix of the anchors' correction: entry ``(targets[f, j, p],
    cols[f, j])`` = ``w[f, j, p]`` wherever ``use``, in that order (targets, w, use: (c, k, P); by
    default anchor (f, j)'s column is ``f k + j`` of ``c k``)."""
    c, k, _ = w.shape
    if cols is None:
        cols, num_cols = torch.arange(c * k, device=w.device).view(c, k), c * k
    picked = cols[..., None].expand_as(w)[use]
    return torch.sparse_coo_tensor(
        torch.stack([targets[use], picked]), w[use], (num_rows, num_cols), check_invariants=False
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

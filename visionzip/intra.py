"""AOT stage 2: the intra-frame OT merge (docs/algorithm.md §2), and the model's pooling of the
merged frames (stage 3).

The merge is computed once as weights (:class:`IntraWeights`, :func:`intra_weights`) and applied to
any tensor laid out like the features (:func:`apply_intra_pool`), so the same reduction serves the
features and any other per-token tensor of the video.

:func:`apply_intra_pool` has one reference implementation: the merged frames
(:func:`merge_frames`: the anchors replaced by their merged values), pooled as the model pools.
Its faster path (:func:`kept_cells`, on a CPU in float32 with a linear pooling, for weights marked
as read at the kept cells) forms only the kept pooled cells, as one product per frame; the weights'
faster path (:func:`intra_weights`, without autograd) works in place on one (F, N, k) map, the same
arithmetic. :func:`visionzip.reference_kernels` switches both off; tests check the tokens of both
settings against each other within 1e-5 relative (float32), the weights bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from ._checks import check_choice, check_finite, check_grid, check_mask, check_tensor
from .config import AOTConfig, OTMass, PoolMode, SinkhornStop
from .kernels import fast_kernels_enabled
from .layout import grid_distances, pool_tokens, pooling_matrix
from .ops import flat_rows, front_indices, gather_rows, token_norms
from .sinkhorn import sinkhorn

_D = AOTConfig()


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
        first ``counts[f]`` of them real (:func:`~visionzip.ops.front_indices` of the kept cells), so
        that :func:`apply_intra_pool` may form those cells by :func:`kept_cells`. ``moved`` (F,) bool:
        the frames the merge changes, i.e. whose change is not all zero (a frame whose tokens are all
        anchors, or a merge configured as the identity, is pooled as it is)."""
        moved = self.change.ne(0).flatten(1).any(1) if self.moved is None else self.moved
        return replace(self, rows=rows, counts=counts, moved=moved)

    def anchor_delta(self, x: torch.Tensor) -> torch.Tensor:
        """(F, k, D) float32: each anchor's merged value minus its value in x (F, N, D), the product
        ``change^T X`` in x's dtype. Exactly zero at padding slots and in frames the merge leaves."""
        return torch.bmm(self.change.transpose(1, 2).to(x.dtype), x).float()

    def merged_anchors(self, x: torch.Tensor) -> torch.Tensor:
        """(F, k, D) float32: the anchors' merged values for values x (F, N, D)."""
        return self.anchor_delta(x) + gather_rows(x.contiguous(), self.index).float()


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

    Cost ``C_ij = (1 - cos_ij) + position_weight * |pos_i - pos_j|`` between every token i and anchor
    j of a frame (the cosines: one (F, N, D) x (F, D, k) product), kernel ``exp(-C / epsilon)`` on the
    pruned rows, Sinkhorn with uniform marginals, then the OT and nearest-neighbour updates as weights."""
    f_, n, d = features.shape
    h, w = grid
    idx_r, valid_r, n_r = front_indices(anchor_mask)  # (F, k) ascending; one host sync per video batch
    k = idx_r.shape[1]
    if k == 0:
        return None
    pruned = ~anchor_mask  # (F, N)
    n_p = pruned.sum(-1)  # (F,)
    x = features.contiguous()
    if norms is None:
        norms = token_norms(x)
    x_norm = norms.clamp_min(1e-12)  # (F, N)
    r_norm = x_norm.gather(1, idx_r)  # (F, k)
    # dist[f, i, j] = D[index[f, j], i], gathered from D's transpose so that k is innermost, as in cos
    dist = _scaled_distances(h, w, float(position_weight), x.device).index_select(1, idx_r.reshape(-1))
    dist = dist.view(n, f_, k).transpose(0, 1)  # (F, N, k)
    # faster path: without autograd every step works in place on the one (F, N, k) map; the same
    # arithmetic, bit for bit ((cos - 1) - dist is -((1 - cos) + dist): rounding is symmetric under negation)
    inplace = fast_kernels_enabled() and not _needs_grad(x, norms)
    dots = _anchor_dots(x, idx_r) if inplace else torch.bmm(x, gather_rows(x, idx_r).transpose(1, 2)).float()
    if inplace:
        cos = dots.div_(x_norm[:, :, None]).div_(r_norm[:, None, :])
        cos.masked_fill_(~valid_r[:, None, :], float("-inf"))
        nearest = cos.argmax(-1)
        kernel = cos.sub_(1.0).sub_(dist).div_(epsilon).exp_().mul_(pruned[:, :, None])
    else:
        cos = dots / x_norm[:, :, None] / r_norm[:, None, :]
        cos = cos.masked_fill(~valid_r[:, None, :], float("-inf"))  # padding: never nearest, exp(-inf) = 0
        nearest = cos.argmax(-1)  # (F, N) nearest anchor by cosine (read for pruned tokens only)
        kernel = torch.exp(-((1.0 - cos) + dist) / epsilon) * pruned[:, :, None]
    del cos, dots, dist
    row = pruned.float() / n_p.clamp_min(1)[:, None].float()  # (F, N)
    col = valid_r.float() / n_r.clamp_min(1)[:, None].float()  # (F, k)
    plan = sinkhorn(kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=sinkhorn_stop.value,
                    check=False, overwrite=inplace).plan
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


#: on a CPU, the fast path gathers the anchors of at most this many bytes of frames at a time
CPU_CHUNK_BYTES = 24 * 2**20


def _anchor_dots(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(F, N, k) float32 dot products of every token of contiguous x (F, N, D) with its frame's anchors
    ``x[f, index[f, j]]``: the reference's one ``bmm``, written into one map a chunk of frames at a
    time on a CPU (:data:`CPU_CHUNK_BYTES` of features, at least one frame), so that the anchors are
    never gathered for the whole video at once (a (F, k, D) copy as large as a tenth of the input)."""
    f_, n, _ = x.shape
    out = torch.empty(f_, n, index.shape[1], device=x.device, dtype=torch.float32)
    step = f_ if x.device.type != "cpu" else max(CPU_CHUNK_BYTES // max(x[0].numel() * x.element_size(), 1), 1)
    for start in range(0, f_, step):
        sl = slice(start, min(start + step, f_))
        anchors = gather_rows(x[sl], index[sl]).transpose(1, 2)  # (c, D, k)
        if x.dtype == torch.float32:
            torch.bmm(x[sl], anchors, out=out[sl])
        else:
            out[sl] = torch.bmm(x[sl], anchors)
    return out


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an op on these tensors (it refuses in-place steps and ``out=`` there)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


@functools.lru_cache(maxsize=64)
def _scaled_distances(h: int, w: int, position_weight: float, device: torch.device) -> torch.Tensor:
    """(N, N) the transpose of ``position_weight * grid_distances`` (contiguous), built once per (grid,
    weight, device): entry (i, j) is the scaled distance ``D[j, i]`` (``cdist`` is symmetric in value
    but not always bit for bit, and the release reads the anchor's row)."""
    return (position_weight * grid_distances(h, w, device)).T.contiguous()


def merge_frames(x: torch.Tensor, weights: IntraWeights) -> torch.Tensor:
    """(F, N, D) in x's dtype: the frames x (F, N, D) with every real anchor replaced by its merged
    value (:meth:`IntraWeights.merged_anchors`), every other token as it is. x is not written to."""
    f_, n, d = x.shape
    merged = weights.merged_anchors(x).to(x.dtype)[weights.valid]  # (real anchors, D)
    at = flat_rows(weights.index, n)[weights.valid]
    return x.reshape(f_ * n, d).index_copy(0, at, merged).view(f_, n, d)


def uses_kept_cells(x: torch.Tensor, weights: IntraWeights | None, mode: PoolMode) -> bool:
    """Whether :func:`apply_intra_pool` takes the faster path for x: weights marked as read at the kept
    cells (:meth:`IntraWeights.reading`), x on a CPU in float32, a linear pooling, and the faster paths
    on (:func:`visionzip.reference_kernels` switches them off)."""
    return (
        weights is not None and weights.rows is not None and mode is not PoolMode.MAX
        and x.device.type == "cpu" and x.dtype == torch.float32 and fast_kernels_enabled()
    )


def apply_intra_pool(
    x: torch.Tensor,
    weights: IntraWeights | None,
    grid: tuple[int, int],
    mode: PoolMode,
    stride: int,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's pooling of x (F, N, D) with the anchors replaced by their merged values. Returns
    (F, n, D) in x's dtype; with ``rows`` (F, r) int64 positions of the pooled frames, only those rows
    (F, r, D). x is not written to.

    Reference: ``pool(merge_frames(x))``, ``rows`` gathered from it. Faster path (:func:`uses_kept_cells`,
    ``rows`` the marked ones or None): the marked cells by :func:`kept_cells`; the whole result is the
    reference with those cells (the real kept cells of the frames the merge moves) replaced by
    :func:`kept_cells`' values, so that the rows alone and the whole result agree bit for bit on every
    real kept cell either way."""
    if weights is None:
        full = pool_tokens(x, grid, mode, stride)
        return full if rows is None else gather_rows(full.contiguous(), rows)
    fast = uses_kept_cells(x, weights, mode) and (rows is None or torch.equal(rows, weights.rows))
    if fast and rows is not None:
        return kept_cells(x, weights, grid, mode, stride)
    full = pool_tokens(merge_frames(x, weights), grid, mode, stride)
    if fast:
        assert weights.rows is not None and weights.counts is not None and weights.moved is not None
        f_, n, d = full.shape
        real = torch.arange(weights.rows.shape[1], device=x.device)[None, :] < weights.counts[:, None]
        real &= weights.moved[:, None]
        cells = kept_cells(x, weights, grid, mode, stride)[real]
        return full.reshape(f_ * n, d).index_copy(0, flat_rows(weights.rows, n)[real], cells).view(f_, n, d)
    return full if rows is None else gather_rows(full.contiguous(), rows)


def kept_cells(
    x: torch.Tensor, weights: IntraWeights, grid: tuple[int, int], mode: PoolMode, stride: int
) -> torch.Tensor:
    """(F, r, D): the pooled cells ``weights.rows`` of the merged frames of x (F, N, D), for a linear
    pooling, as one product per frame over its real cells. A kept cell c is ``sum_i M[i, c] X'_i`` for
    the pooling matrix M and the merged frame X' = X + change^T X at the anchors, i.e.
    ``sum_i (M[i, c] + sum_j change_ij M[a_j, c]) X_i``: the (N, r) mixing matrix is formed first (an
    (N, k) x (k, r) product), then applied to the frame, so neither the anchors' changes nor the
    pooled frames are formed; a moved frame's rows past ``counts[f]`` are 0. A frame the merge leaves
    as it is (``weights.moved`` False) is the model's pooling of it at every row, bit for bit."""
    assert weights.rows is not None and weights.counts is not None and weights.moved is not None
    f_, n_tok, d = x.shape
    rows = weights.rows
    r, k = rows.shape[1], weights.index.shape[1]
    counts = weights.counts.tolist()
    moved = weights.moved.tolist()
    still = [f for f, m in enumerate(moved) if not m]
    matrix = pooling_matrix(grid, mode, stride, x.device)  # (N, n)
    cols = matrix.index_select(1, rows.reshape(-1)).view(n_tok, f_, r).transpose(0, 1)  # (F, N, r) view
    mix = torch.baddbmm(cols, weights.change, cols.gather(1, weights.index[..., None].expand(f_, k, r)))
    direct = not _needs_grad(x, mix)  # out= where autograd allows it: the same product
    out = x.new_zeros(f_, r, d)
    for f, m in enumerate(counts):
        if not moved[f]:
            continue
        if direct:
            torch.mm(mix[f, :, :m].t(), x[f], out=out[f, :m])
        else:
            out[f, :m] = torch.mm(mix[f, :, :m].t(), x[f])
    if still:  # the model's pooling of the frames the merge leaves alone (all of them at retention 1.0)
        out[still] = gather_rows(pool_tokens(x[still], grid, mode, stride).contiguous(), rows[still])
    return out


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
    (R + sum_NN P)/(1 + #NN)`` with ``s = scale`` (:func:`intra_weights`, :func:`merge_frames`).
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
        scale=scale, max_iter=max_iter, tol=tol, groups=groups,
        sinkhorn_stop=check_choice("sinkhorn_stop", sinkhorn_stop, SinkhornStop),  # type: ignore[arg-type]
        ot_mass=check_choice("ot_mass", ot_mass, OTMass),  # type: ignore[arg-type]
    )
    return features.clone() if update is None else merge_frames(features, update)

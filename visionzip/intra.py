"""AOT stage 2: the intra-frame OT merge (docs/algorithm.md §2), and its fusion with the model's
pooling (stage 3): pooling is linear, so the anchors' update is added to the pooled frame directly.

The merge is computed once as weights (:class:`IntraWeights`) and applied to any tensor laid out like
the features (:func:`apply_intra_pool`), so the same reduction serves the features and any other
per-token tensor of the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as Fn

from ._checks import check_choice, check_finite, check_grid, check_mask, check_tensor
from .config import AOTConfig, OTMass, PoolMode, SinkhornStop
from .layout import grid_distances, pool_tokens, pooling_matrix, pooling_taps
from .ops import front_indices
from .sinkhorn import sinkhorn

_D = AOTConfig()


@dataclass
class IntraWeights:
    """The intra-frame merge of a batch of frames as a linear map.

    index:       (F, k) anchor positions, ascending, padded to the largest anchor count
    valid:       (F, k) bool, real anchors (not padding)
    self_weight: (F, k) float32, weight of an anchor's own value
    weights:     (F, N, k) float32, weight of token i in anchor j's new value (0 for anchors)

    New anchor value ``A_j = self_weight_j * X_j + sum_i weights_ij X_i``; other tokens unchanged.
    """

    index: torch.Tensor
    valid: torch.Tensor
    self_weight: torch.Tensor
    weights: torch.Tensor
    #: the anchors' values in the features the weights were computed on (reused for them, not copied again)
    anchors: torch.Tensor | None = None

    def frames(self, sl: slice) -> IntraWeights:
        anchors = None if self.anchors is None else self.anchors[sl]
        return IntraWeights(self.index[sl], self.valid[sl], self.self_weight[sl], self.weights[sl], anchors)

    def merged_anchors(self, x: torch.Tensor, *, same: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(merged (F, k, D) float32, anchors (F, k, D) input dtype)`` for values x (F, N, D);
        ``same``: x is the tensor the weights were computed on (its anchors are already gathered)."""
        f_, k = self.index.shape
        if same and self.anchors is not None:
            anchors = self.anchors
        else:
            anchors = x.gather(1, self.index[..., None].expand(f_, k, x.shape[-1]))
        context = torch.bmm(self.weights.transpose(1, 2).to(x.dtype), x)  # (F, k, D)
        return anchors.float() * self.self_weight[..., None] + context.float(), anchors

    def anchor_delta(self, x: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        """(F, k, D) float32: each anchor's merged value minus its value in x, ``(self_weight - 1) X_j +
        sum_i weights_ij X_i``, computed in place on the product (no merged copy). Exactly zero at padding
        slots: their weights are 0 and their self weight is 1."""
        f_, k = self.index.shape
        if same and self.anchors is not None:
            anchors = self.anchors
        else:
            anchors = x.gather(1, self.index[..., None].expand(f_, k, x.shape[-1]))
        delta = torch.bmm(self.weights.transpose(1, 2).to(x.dtype), x).float()  # (F, k, D)
        return delta.addcmul_(anchors.float(), (self.self_weight - 1.0)[..., None])


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
) -> IntraWeights | None:
    """The intra-frame merge's weights for validated inputs (no checks); None when no frame has an
    anchor. A frame without pruned tokens keeps its anchors exactly (self weight 1)."""
    f_, n, d = features.shape
    h, w = grid
    idx_r, valid_r, n_r = front_indices(anchor_mask)  # (F, k) ascending; one host sync per video batch
    k = idx_r.shape[1]
    if k == 0:
        return None
    pruned = ~anchor_mask  # (F, N)
    n_p = pruned.sum(-1)  # (F,)

    anchors = features.gather(1, idx_r[..., None].expand(f_, k, d))  # (F, n_r, D)
    wide = torch.promote_types(features.dtype, torch.float32)  # norms accumulate in >= float32
    x_norm = torch.linalg.vector_norm(features, dim=-1, dtype=wide).float().clamp_min(1e-12)  # (F, N)
    r_norm = x_norm.gather(1, idx_r)  # (F, n_r)
    cos = torch.bmm(features, anchors.transpose(1, 2)).float()  # (F, N, n_r)
    cos = cos / x_norm[:, :, None] / r_norm[:, None, :]
    dist = grid_distances(h, w, features.device).T[idx_r].transpose(1, 2)  # (F, N, n_r)
    cost = (1.0 - cos) + position_weight * dist
    present = pruned[:, :, None] & valid_r[:, None, :]  # (F, N, n_r)
    kernel = torch.exp(-cost / epsilon) * present
    row = pruned.float() / n_p.clamp_min(1)[:, None].float()  # (F, N)
    col = valid_r.float() / n_r.clamp_min(1)[:, None].float()  # (F, n_r)
    plan = sinkhorn(kernel, row, col, max_iter=max_iter, tol=tol, groups=groups, stop=sinkhorn_stop.value, check=False).plan
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
    untouched = (n_p == 0)[:, None]  # every token an anchor: the frame passes through unchanged
    # padding slots (no anchor) get self weight exactly 1 (their weights are 0): their delta is exactly 0
    self_weight = torch.where(untouched | ~valid_r, torch.ones_like(self_weight), self_weight)
    return IntraWeights(idx_r, valid_r, self_weight, weights, anchors)


def apply_intra_pool(
    x: torch.Tensor, weights: IntraWeights | None, grid: tuple[int, int], mode: PoolMode, stride: int, *,
    same: bool = False,
) -> torch.Tensor:
    """The model's pooling of x (F, N, D) with the anchors replaced by their merged values, without
    building the merged frames: pool(X') = pool(X) + M[:, anchors] (merged - anchors) for a linear
    pooling M (``max`` pooling materialises the merged frames). Returns (F, n, D) in x's dtype."""
    if weights is None:
        return pool_tokens(x, grid, mode, stride)
    if mode is PoolMode.MAX:
        merged, _ = weights.merged_anchors(x, same=same)
        f_, k = weights.index.shape
        full = x.clone()
        flat = (weights.index + torch.arange(f_, device=x.device)[:, None] * x.shape[1])[weights.valid]
        full.view(-1, x.shape[-1])[flat] = merged.to(x.dtype)[weights.valid]
        return pool_tokens(full, grid, mode, stride)
    delta = weights.anchor_delta(x, same=same)  # (F, k, D), zero at padding slots
    cells, taps = pooling_taps(grid, mode, stride, x.device)
    if cells.shape[1] == 1:  # each token feeds one cell (average, none): add each anchor's delta to its cell
        out = pool_tokens(x, grid, mode, stride).float()
        if out.data_ptr() == x.data_ptr() or not out.is_contiguous():
            out = out.clone()  # 'none' pools to x itself: the result is a new tensor
        f_, n, d = out.shape
        target = cells[weights.index, 0] + torch.arange(f_, device=x.device)[:, None] * n  # (F, k)
        out.view(f_ * n, d).index_add_(0, target.reshape(-1), delta.mul_(taps[weights.index, 0][..., None]).view(-1, d))
        return out.to(x.dtype)
    m = pooling_matrix(grid, mode, stride, x.device)[weights.index]  # (F, k, n)
    correction = torch.bmm(m.transpose(1, 2), delta)  # (F, n, D) float32
    return correction.add_(pool_tokens(x, grid, mode, stride)).to(x.dtype)  # in place: no third (F, n, D) tensor


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
    merged, _ = update.merged_anchors(features, same=True)
    merged = merged.to(features.dtype)
    k = update.index.shape[1]
    if bool(update.valid.all()):
        out.scatter_(1, update.index[..., None].expand(f_, k, d), merged)
    else:
        flat = (update.index + torch.arange(f_, device=features.device)[:, None] * n)[update.valid]
        out.view(f_ * n, d)[flat] = merged[update.valid]
    return out

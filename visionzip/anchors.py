"""AOT stage 1: anchor selection per frame (docs/algorithm.md §1)."""

from __future__ import annotations

import torch

from ._checks import check_choice, check_finite, check_grid, check_ratio, check_tensor
from .config import AnchorBudget, AOTConfig

_D = AOTConfig()

#: windows along the shorter side of the grid when the window is chosen from the grid (``window=None``)
AUTO_WINDOWS_PER_SIDE = 3


def resolve_window(window: int | None, grid: tuple[int, int], *, what: str = "") -> int:
    """The side of the local-anchor windows on an ``H x W`` grid.

    An integer is used as given and must fit the grid (``window <= min(H, W)``); None chooses it from
    the grid: ``min(H, W) // 3`` (three windows along the shorter side, as the release's 9 on
    LLaVA's 27 x 27), at least 2 (at least 1 on a grid one token wide). ``what`` names the video in
    the error."""
    h, w = grid
    side = min(h, w)
    if window is None:
        return max(side // AUTO_WINDOWS_PER_SIDE, min(2, side))
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= side:
        where = f" of {what}" if what else ""
        raise ValueError(
            f"window={window!r} does not fit the {h}x{w} grid{where}; expected an integer in [1, {side}], "
            "or window: null to choose it from each video's grid"
        )
    return window


def select_anchors(
    shallow_scores: torch.Tensor,
    deep_scores: torch.Tensor,
    *,
    grid: tuple[int, int],
    num_anchors: int,
    global_ratio: float = _D.global_ratio,
    window: int | None = _D.window,
    budget: AnchorBudget | str = _D.anchor_budget,
) -> torch.Tensor:
    """Pick ``num_anchors`` anchor tokens per frame: local ones from ``shallow_scores`` inside
    non-overlapping ``window x window`` tiles (None: chosen from the grid, :func:`resolve_window`),
    global ones from ``deep_scores`` over the frame.

    shallow_scores, deep_scores: (F, N) attention received per token (docs/algorithm.md §0), N = H*W.
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
    n = shallow_scores.shape[1]
    h, w = check_grid(grid, n)
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, int) or not 1 <= num_anchors <= n:
        raise ValueError(f"num_anchors={num_anchors!r} is not valid; expected an integer in [1, {n}] (N)")
    check_ratio("global_ratio", global_ratio)
    window = resolve_window(window, (h, w))
    budget = check_choice("budget", budget, AnchorBudget)
    return anchor_mask(shallow_scores, deep_scores, (h, w), num_anchors, global_ratio, window, budget)  # type: ignore[arg-type]


def anchor_mask(
    shallow_scores: torch.Tensor,
    deep_scores: torch.Tensor,
    grid: tuple[int, int],
    num_anchors: int,
    global_ratio: float,
    window: int,
    budget: AnchorBudget,
) -> torch.Tensor:
    """:func:`select_anchors` on validated inputs (no checks)."""
    f_, n = shallow_scores.shape
    h, w = grid
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

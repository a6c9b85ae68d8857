"""``pool``: uniform spatial pooling of every pooled frame to a coarser grid whose size gives the
budget (two grid sizes around the target, spread evenly over the frames)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as Fn

from ..config import NewlinePosition
from ..inputs import VideoInput
from ..layout import VideoLayout, append_newline, newline_values, pool_tokens
from ..plan import CompressionResult, ReductionPlan
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, check_budget, emits_trailing, with_retention


@dataclass(frozen=True, kw_only=True)
class PoolConfig(BaselineConfig):
    """Uniform spatial pooling of every pooled frame to a coarser grid whose size gives the budget."""

    retention: float
    _METHOD: ClassVar[str] = "pool"


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
        check_budget(cfg, layout, f_, round(cfg.retention * f_ * n))
        grids = pool_grids_for(cfg.retention, (ph, pw), f_)
        trailing = emits_trailing(cfg, layout)
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


register_method(MethodSpec("pool", PoolConfig, _compress_pool, make_config=with_retention(PoolConfig)))

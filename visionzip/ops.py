"""Small tensor helpers every stage shares (no checks: callers pass validated tensors)."""

from __future__ import annotations

import torch


def rank_ascending(values: torch.Tensor) -> torch.Tensor:
    """Rank of every entry along the last dim (0 = smallest; ties: earlier first)."""
    order = torch.argsort(values, dim=-1, stable=True)
    ar = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ar)


def front_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of True entries first (ascending), per row. Returns (index (F, k_max),
    valid (F, k_max), counts (F,)) with k_max the largest count (one host sync)."""
    counts = mask.sum(-1)
    k_max = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)[:, :k_max]
    valid = torch.arange(k_max, device=mask.device)[None, :] < counts[:, None]
    return order, valid, counts


def token_norms(features: torch.Tensor) -> torch.Tensor:
    """(..., N) float32 Euclidean norms of the tokens of ``features`` (..., N, D), accumulated in at
    least float32."""
    wide = torch.promote_types(features.dtype, torch.float32)
    return torch.linalg.vector_norm(features, dim=-1, dtype=wide).float()


def flat_rows(index: torch.Tensor, n: int) -> torch.Tensor:
    """(F, k, ...) positions ``index[f, ...]`` within rows of length n as flat positions ``f * n + index[f, ...]``."""
    offsets = torch.arange(index.shape[0], device=index.device) * n
    return index + offsets.view((-1,) + (1,) * (index.dim() - 1))


def gather_rows(x: torch.Tensor, index: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """(F, k, D) the rows ``x[f, index[f, j]]`` of contiguous x (F, N, D), by one ``index_select``
    (into ``out`` (F, k, D) contiguous when given)."""
    f_, k = index.shape
    n, d = x.shape[1], x.shape[2]
    flat = flat_rows(index, n).reshape(-1)
    if out is not None:
        torch.index_select(x.reshape(f_ * n, d), 0, flat, out=out.view(f_ * k, d))
        return out
    return x.reshape(f_ * n, d).index_select(0, flat).view(f_, k, d)

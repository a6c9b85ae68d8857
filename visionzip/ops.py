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


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(F, k, D) the rows ``x[f, index[f, j]]`` of contiguous x (F, N, D), by one ``index_select``."""
    f_, k = index.shape
    n, d = x.shape[1], x.shape[2]
    flat = (index + torch.arange(f_, device=x.device)[:, None] * n).reshape(-1)
    return x.reshape(f_ * n, d).index_select(0, flat).view(f_, k, d)

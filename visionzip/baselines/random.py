"""``random``: a seeded random subset of every frame's pooled tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import _check_int
from ..inputs import VideoInput
from ..ops import rank_ascending
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, Selection, compress_on_grid, frame_budgets, with_retention


@dataclass(frozen=True, kw_only=True)
class RandomConfig(BaselineConfig):
    """A seeded random subset of every frame's pooled tokens."""

    retention: float
    seed: int = 0
    _METHOD: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("seed", self.seed, 0)


def random_select(pooled: torch.Tensor, budget: int, seed: int) -> Selection:
    """A seeded random subset of each frame's tokens, ``budget`` in all (spread evenly over frames),
    row-major order kept. The draw is made on the CPU from ``torch.Generator().manual_seed(seed)``
    so it is the same on every device and for a video alone or in a batch. pooled: (F, n, D)."""
    f_, n, _ = pooled.shape
    dev = pooled.device
    gen = torch.Generator().manual_seed(seed)
    draw = torch.rand(f_, n, generator=gen).to(dev)  # (F, n)
    keep = rank_ascending(draw) < frame_budgets(budget, f_, n).to(dev)[:, None]
    return Selection(keep, torch.zeros_like(keep))


def _select(pooled: torch.Tensor, video: VideoInput, cfg: RandomConfig, budget: int) -> Selection:
    return random_select(pooled, budget, cfg.seed)


register_method(MethodSpec("random", RandomConfig, compress_on_grid(_select), make_config=with_retention(RandomConfig)))

"""``full``: no reduction, LLaVA-NeXT's plain sequence of pooled frames (retention 1.0 exactly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..inputs import VideoInput
from ..layout import VideoLayout
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, Selection, compress_on_grid


@dataclass(frozen=True, kw_only=True)
class FullConfig(BaselineConfig):
    """No reduction: LLaVA-NeXT's plain sequence of pooled frames (retention 1.0 exactly)."""

    _METHOD: ClassVar[str] = "full"

    @property
    def retention(self) -> float:
        return 1.0


def full_select(pooled: torch.Tensor) -> Selection:
    """No reduction: every pooled token emitted as itself. pooled: (F, n, D)."""
    f_, n, _ = pooled.shape
    keep = torch.ones(f_, n, dtype=torch.bool, device=pooled.device)
    return Selection(keep, torch.zeros_like(keep))


def _make_full(retention: float | None = None, layout: VideoLayout | None = None, **overrides: Any) -> FullConfig:
    if retention is not None and retention != 1.0:
        raise ValueError(f"retention={retention!r} is not valid for method 'full'; expected None or 1.0")
    return FullConfig(**overrides)


def _select(pooled: torch.Tensor, video: VideoInput, cfg: Any, budget: int) -> Selection:
    return full_select(pooled)


register_method(MethodSpec("full", FullConfig, compress_on_grid(_select), make_config=_make_full))

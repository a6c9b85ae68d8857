"""A compression method written outside the library, as a user would add one: a config class, a
select function on the model's grid, one ``register_method`` call (no edit to visionzip)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import ClassVar

import torch

import visionzip as vz

NAME = "every_other"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EveryOtherConfig(vz.MethodConfig):
    """Keep every ``step``-th cell of each frame's pooled grid (``step`` from the retention); reads
    the deep layer's attention scores only to show that the tower hands over what a method declares."""

    step: int = 2
    deep_layer: int = -2
    _METHOD: ClassVar[str] = NAME

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 1:
            raise ValueError(f"step={self.step!r} is not valid; expected an integer >= 1")


def select(pooled: torch.Tensor, video: vz.VideoInput, cfg: EveryOtherConfig, budget: int) -> vz.Selection:
    f_, n, _ = pooled.shape
    assert video.deep is not None and video.deep.shape == (f_, video.layout.tokens_per_frame)
    kept = (torch.arange(n, device=pooled.device) % cfg.step == 0).expand(f_, n).contiguous()
    return vz.Selection(kept, torch.zeros_like(kept))


def make_config(
    retention: float | None = None, layout: vz.VideoLayout | None = None, **overrides: object
) -> EveryOtherConfig:
    if retention is not None:
        overrides.setdefault("step", max(round(1 / retention), 1))
    return EveryOtherConfig(**overrides)  # type: ignore[arg-type]


SPEC = vz.MethodSpec(NAME, EveryOtherConfig, vz.compress_on_grid(select), scores="deep", make_config=make_config)


@contextlib.contextmanager
def registered() -> Iterator[vz.MethodSpec]:
    vz.register_method(SPEC)
    try:
        yield SPEC
    finally:
        vz.unregister_method(NAME)

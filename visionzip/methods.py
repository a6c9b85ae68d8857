"""One interface for every compression method: names, configs for a target retention, dispatch
through the registry (:mod:`visionzip.registry`).

::

    vz.list_methods()                                   # ['aot', 'dycoke', 'fastvid', 'full', ...]
    cfg = vz.make_config("fastvid", retention=0.15)     # a FastVIDConfig
    cfg = vz.make_config("aot", retention=0.10)         # AOT's exact-budget mode, calibrated per layout
    out = vz.compress_video(feats, shallow, deep, config=cfg, layout=layout)   # the model's layout
    out = vz.compress_video(feats, shallow, deep, config=cfg, grid=(27, 27))   # or a bare grid
    out.tokens, out.retention, out.positions, out.plan.apply(feats, newline)

Every method gets the same pooled frames and the same accounting (paper retention: visual tokens
into the LLM, newlines excluded, over frames x pooled tokens per frame of the model's grid;
docs/algorithm.md, "Retention and FLOPs").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import aot as _aot  # noqa: F401  (registers "aot")
from . import baselines as _baselines  # noqa: F401  (registers every module of visionzip/baselines/)
from .budget import calibrate_aot
from .inputs import gather_inputs
from .layout import VideoLayout
from .plan import CompressionResult
from .registry import get_method, list_methods, method_of

__all__ = ["as_method", "calibrate_aot", "compress_video", "config_class", "list_methods", "make_config"]


def as_method(method: Any) -> str:
    """The registered name of ``method``, or a ValueError listing the registered methods."""
    return get_method(method).name


def config_class(method: Any) -> type:
    """The config dataclass of a registered method."""
    return get_method(method).config_class


def make_config(
    method: Any, retention: float | None = None, *, layout: VideoLayout | None = None, **overrides: Any
) -> Any:
    """A config of ``method`` for a target ``retention`` (paper definition), fields in
    ``overrides`` applied on top.

    ``retention`` is required for every method but ``full`` (whose retention is 1.0) and ``aot``
    (without one: the release's defaults). ``aot`` with a retention is the exact-budget mode
    (``token_budget=retention``) whose anchors are calibrated for each video's layout at
    compression time, or now for ``layout`` when given (:func:`calibrate_aot`); ``aot`` at 1.0 is
    the identity (the model's uncompressed sequence). The config works on any layout.
    """
    spec = get_method(method)
    if spec.make_config is None:
        if retention is None:
            raise ValueError(f"retention is None; expected a target retention in (0, 1] for method {spec.name!r}")
        return spec.config_class(retention=retention, **overrides)
    return spec.make_config(retention, layout, **overrides)


def compress_video(
    features: torch.Tensor | Sequence[torch.Tensor],
    shallow_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    deep_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    config: Any,
    grid: tuple[int, int] | None = None,
    image_newline: torch.Tensor | None = None,
    layout: VideoLayout | Sequence[VideoLayout] | None = None,
    question: str | Sequence[str | None] | None = None,
) -> CompressionResult | list[CompressionResult]:
    """Compress one video or a batch with any registered method's config.

    features: (F, N, D) frame tokens (or a list / stacked (B, F, N, D) batch); shallow_scores,
    deep_scores: (F, N) attention received per token at ``config.shallow_layer`` /
    ``config.deep_layer`` (per video for a batch), read only when the method reads them (None
    otherwise). The token layout comes from ``layout`` (the model's :class:`VideoLayout`, one or one
    per video: frames, grid, pooling, newlines and the newline embedding); without one, from
    ``grid`` plus the config's layout fields (None: bilinear, stride 2, ``one_token``) and
    ``image_newline``. ``question``: the question text, for methods that read it.

    Returns a :class:`CompressionResult` (a list for a batch): tokens (T, D) in the order the LLM
    sees them, paper retention, stage counts, kept / merged masks, and the plan (positions of every
    token on the model's grid; ``plan.apply`` replays the reduction on any per-token tensor). Each
    video's result is the same as if it were compressed alone.
    """
    spec = method_of(config)
    videos, batched = gather_inputs(
        features, shallow_scores, deep_scores, config=config, method=spec.name, score_roles=spec.score_roles,
        grid=grid, image_newline=image_newline, layout=layout, question=question if spec.reads_question else None,
    )
    results = spec.compress(videos, config)
    return results if batched else results[0]

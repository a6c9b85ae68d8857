"""One interface for every compression method: names, configs for a target retention, dispatch.

::

    vz.list_methods()                                   # ['aot', 'dycoke', 'fastvid', 'full', ...]
    cfg = vz.make_config("fastvid", retention=0.15)     # a FastVIDConfig
    cfg = vz.make_config("aot", retention=0.10)         # AOT's exact-budget mode, calibrated
    out = vz.compress_video(feats, shallow, deep, config=cfg, grid=(27, 27))
    out.tokens, out.retention, out.kept_mask, out.merged_mask

Every method gets the same pooled frames and the same accounting (paper retention: visual tokens
into the LLM, newlines excluded, over frames x pooled tokens per frame; SPEC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._checks import check_choice
from .aot import CompressionResult, pooled_grid
from .aot import compress_video as _aot_compress_video
from .baselines import compress_baseline
from .config import CONFIG_CLASSES, AOTConfig, CompressionConfig, KeyframeEmit, Method, PoolMode

# Calibration of AOT's exact-budget mode: the frames and keep ratio the release ran each model with
# (LLaVA-OneVision: bilinear pooling, 32 frames, keep 0.3; LLaVA-Video: average pooling, 64 frames,
# keep 0.4), anchors in multiples of 18 (the local budget divides over the 9 windows).
CALIBRATION_FRAMES = {PoolMode.BILINEAR: 32, PoolMode.AVERAGE: 64}
CALIBRATION_KEEP_RATIO = {PoolMode.BILINEAR: 0.3, PoolMode.AVERAGE: 0.4}
ANCHOR_MULTIPLE = 18


def as_method(method: Method | str) -> Method:
    """``Method(method)``, or a ValueError listing the methods."""
    return check_choice("method", method, Method)  # type: ignore[return-value]


def list_methods() -> list[str]:
    """Names of every compression method, sorted."""
    return sorted(m.value for m in Method)


def config_class(method: Method | str) -> type:
    """The config dataclass of a method (the one dispatch table: ``config.CONFIG_CLASSES``)."""
    return CONFIG_CLASSES[as_method(method)]


def calibrate_aot(
    retention: float,
    *,
    pool_mode: PoolMode | str = AOTConfig.pool_mode,
    frames: int | None = None,
    num_clips: int = AOTConfig.num_clips,
    keyframe_emit: KeyframeEmit | str = AOTConfig.keyframe_emit,
    grid: tuple[int, int] = (27, 27),
    pool_stride: int = AOTConfig.pool_stride,
) -> tuple[int, float]:
    """``(num_anchors, keep_ratio)`` for AOT at a target retention (paper definition).

    The rule of the calibrated ``ov_*`` / ``video_*`` presets, written as a formula: keep the keep
    ratio the release uses for the model (0.3 for LLaVA-OneVision / bilinear pooling at 32 frames,
    0.4 for LLaVA-Video / average pooling at 64 frames; ``frames`` overrides) and pick the anchors
    so that the retention AOT's token count predicts hits the target. Per frame AOT keeps
    ``c = K * n / N`` pooled cells; each of the ``C`` clips emits its keyframe ``E`` times (2 as
    released, 1 with ``merged_once``) and every later frame keeps ``keep_ratio * c``, so
    ``retention = c * (E*C + keep_ratio*(F - C)) / (F * n)``. ``K`` is that ``c`` scaled to the
    frame and rounded to the nearest multiple of 18, within [18, 18 * floor(N / 18)]; where the bound
    binds, the keep ratio is solved again for the rounded K (clipped to [0, 1]).

    This is what :func:`make_config` uses for AOT's exact-budget mode (``token_budget``), where the
    count of cells per frame is exactly ``round(K * n / N)`` and the later frames' keep counts are
    set by the budget, so the output hits the target exactly whatever the prediction's error. The
    release's own mode keeps a data-dependent number of cells (about 0.8 of that): use its presets.
    """
    if isinstance(retention, bool) or not isinstance(retention, (int, float)) or not 0.0 < retention <= 1.0:
        raise ValueError(f"retention={retention!r} is not valid; expected a target retention in (0, 1]")
    mode = check_choice("pool_mode", pool_mode, PoolMode)
    emit = check_choice("keyframe_emit", keyframe_emit, KeyframeEmit)
    f_ = CALIBRATION_FRAMES[mode] if frames is None else frames  # type: ignore[index]
    if isinstance(f_, bool) or not isinstance(f_, int) or f_ < 1:
        raise ValueError(f"frames={frames!r} is not valid; expected an integer >= 1")
    clips = min(num_clips, f_)
    h, w = grid
    big_n = h * w
    ph, pw = pooled_grid(grid, mode=mode, stride=pool_stride)  # type: ignore[arg-type]
    n = ph * pw
    keep = CALIBRATION_KEEP_RATIO[mode]  # type: ignore[index]
    e = 2 if emit is KeyframeEmit.PAPER else 1
    later = f_ - clips
    cells = retention * f_ * n / (e * clips + keep * later)
    top = ANCHOR_MULTIPLE * (big_n // ANCHOR_MULTIPLE)
    k = ANCHOR_MULTIPLE * max(round(cells * big_n / n / ANCHOR_MULTIPLE), 1)
    if not ANCHOR_MULTIPLE <= k <= top:
        k = min(max(k, ANCHOR_MULTIPLE), top)
        c = min(max(round(k * n / big_n), 1), n)
        keep = 0.0 if later == 0 else min(max((retention * f_ * n / c - e * clips) / later, 0.0), 1.0)
    return k, float(keep)


def make_config(method: Method | str, retention: float | None = None, **overrides: Any) -> CompressionConfig:
    """A config of ``method`` for a target ``retention`` (paper definition), fields in
    ``overrides`` applied on top.

    ``retention`` is required for every method but ``full`` (whose retention is 1.0). For ``aot``
    without a retention: the release's defaults; with one: the exact-budget mode
    (``token_budget=retention``) with ``(num_anchors, keep_ratio)`` from :func:`calibrate_aot` for the
    pooling, clips and keyframe emission the overrides choose.
    """
    m = as_method(method)
    cls = CONFIG_CLASSES[m]
    if m is Method.FULL:
        if retention is not None and retention != 1.0:
            raise ValueError(f"retention={retention!r} is not valid for method 'full'; expected None or 1.0")
        return cls(**overrides)
    if m is Method.AOT:
        if retention is None:
            return AOTConfig(**overrides)
        shape = AOTConfig(**{k: v for k, v in overrides.items() if k not in ("num_anchors", "keep_ratio", "token_budget")})
        k, keep = calibrate_aot(
            retention, pool_mode=shape.pool_mode, num_clips=shape.num_clips, keyframe_emit=shape.keyframe_emit,
            pool_stride=shape.pool_stride,
        )
        return AOTConfig(**{"num_anchors": k, "keep_ratio": keep, "token_budget": retention, **overrides})
    if retention is None:
        raise ValueError(f"retention is None; expected a target retention in (0, 1] for method {m.value!r}")
    return cls(retention=retention, **overrides)


def compress_video(
    features: torch.Tensor | Sequence[torch.Tensor],
    shallow_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    deep_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    config: CompressionConfig,
    grid: tuple[int, int],
    image_newline: torch.Tensor | None = None,
) -> CompressionResult | list[CompressionResult]:
    """Compress one video or a batch with any method's config.

    features: (F, N, D) projected frame tokens (or a list / stacked (B, F, N, D) batch);
    shallow_scores, deep_scores: (F, N) attention received per token at ``config.shallow_layer`` /
    ``config.deep_layer``, or ``None`` when ``config.needs_scores`` is False. ``image_newline`` (D,)
    is needed for ``grid`` / ``frame`` newlines and for ``one_token`` with
    ``one_token_newline="append"``. Returns a :class:`CompressionResult` (a list for a batch): tokens
    (T, D) in the order the LLM sees them, paper retention, stage counts, kept / merged masks.
    """
    if isinstance(config, AOTConfig):
        return _aot_compress_video(
            features, shallow_scores, deep_scores, config=config, grid=grid, image_newline=image_newline  # type: ignore[arg-type]
        )
    if not isinstance(config, tuple(CONFIG_CLASSES.values())):
        names = ", ".join(c.__name__ for c in CONFIG_CLASSES.values())
        raise ValueError(f"config must be a method config ({names}); got {type(config).__name__}")
    return compress_baseline(
        features, shallow_scores, deep_scores, config=config, grid=grid, image_newline=image_newline  # type: ignore[arg-type]
    )


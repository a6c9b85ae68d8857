"""``fastvid``: FastVID (Shen et al., 2025), dynamic segments and density-peaks pruning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as Fn

from ..config import AOTConfig, _check_int, _check_unit_interval
from ..inputs import VideoInput
from ..inter import dynamic_segments
from ..ops import rank_ascending
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, Selection, compress_on_grid, with_retention


@dataclass(frozen=True, kw_only=True)
class FastVIDConfig(BaselineConfig):
    """FastVID (Shen et al., 2025): dynamic temporal segmentation (``num_clips``,
    ``segment_threshold``), then density-peaks clustering (DPC-kNN with ``knn`` neighbours) of each
    segment's tokens."""

    retention: float
    num_clips: int = AOTConfig.num_clips
    segment_threshold: float = 0.9
    knn: int = 5
    _METHOD: ClassVar[str] = "fastvid"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("num_clips", self.num_clips, 1)
        _check_int("knn", self.knn, 1)
        _check_unit_interval("segment_threshold", self.segment_threshold)


def _proportional_split(total: int, weights: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to integer ``weights`` (exact sum)."""
    w = sum(weights)
    raw = [total * x / w for x in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def fastvid_select(
    pooled: torch.Tensor, features: torch.Tensor, budget: int, *, num_clips: int, threshold: float, knn: int
) -> Selection:
    """FastVID (Shen et al., 2025, "FastVID: Dynamic Density Pruning for Fast Video Large Language
    Models"): dynamic segmentation, then density-based spatiotemporal pruning per segment.

    pooled: (F, n, D); features: (F, N, D) the unpooled frames (for the segmentation).
    1. Segments: :func:`visionzip.dynamic_segments` (frame embedding = mean token, cut after the
       ``num_clips - 1`` lowest consecutive similarities and after every one below ``threshold``).
    2. The budget is split over segments in proportion to their frames (largest remainder: exact).
    3. Per segment, density peaks clustering (DPC-kNN) of all its tokens (frames x positions): with
       distances between L2-normalised tokens, density ``rho_i = exp(-mean of the squared distances to
       the knn nearest)``, ``delta_i`` = distance to the nearest denser token (the densest: its largest
       distance), score ``rho * delta``; the segment's budget of highest scores become cluster centers,
       every other token joins its nearest center, each center emitted (at its frame and position) as
       the mean of its cluster.
    Departures: FastVID also keeps a share of tokens chosen by [CLS] attention inside each segment
    (its anchor tokens) and merges with density weights; here every emitted token is a density-peak
    center and clusters are plain means, so the method reads no attention scores. Segmentation
    defaults are ``num_clips = 8``, ``threshold = 0.9``.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    segments = dynamic_segments(features, num_clips=min(num_clips, f_), threshold=threshold)
    share = _proportional_split(budget, segments)
    keep = torch.zeros(f_ * n, dtype=torch.bool, device=dev)
    target = torch.arange(f_ * n, device=dev)
    start = 0
    for length, b in zip(segments, share):  # one loop step per segment, vectorised inside
        lo, m = start * n, length * n
        start += length
        if b >= m:
            keep[lo : lo + m] = True
            continue
        if b == 0:
            continue
        x = Fn.normalize(pooled[lo // n : lo // n + length].reshape(m, d).float(), dim=-1)  # (M, D)
        dist = torch.cdist(x, x)  # (M, M)
        k = min(knn, m - 1)
        if k > 0:
            off = dist.masked_fill(torch.eye(m, dtype=torch.bool, device=dev), float("inf"))
            near = off.topk(k, largest=False).values
            rho = torch.exp(-(near**2).mean(-1))  # (M,)
        else:
            rho = torch.ones(m, device=dev)
        order = rank_ascending(-rho)  # 0 = densest; ties: earlier first
        denser = order[None, :] < order[:, None]  # (M, M) j denser than i
        delta = dist.masked_fill(~denser, float("inf")).amin(-1)
        top = order == 0
        delta = torch.where(top, dist.amax(-1), delta)
        centers = rank_ascending(-(rho * delta)) < b  # (M,)
        nearest = dist.masked_fill(~centers[None, :], float("inf")).argmin(-1)
        keep[lo : lo + m] = centers
        target[lo : lo + m] = lo + torch.where(centers, torch.arange(m, device=dev), nearest)
    keep = keep.view(f_, n)
    merged = keep.reshape(-1)[target].view(f_, n) & ~keep
    return Selection(keep, merged, target, {"clusters": int(keep.sum())}, segments=segments)


def _select(pooled: torch.Tensor, video: VideoInput, cfg: FastVIDConfig, budget: int) -> Selection:
    return fastvid_select(pooled, video.features, budget, num_clips=cfg.num_clips, threshold=cfg.segment_threshold,
                          knn=cfg.knn)


register_method(
    MethodSpec("fastvid", FastVIDConfig, compress_on_grid(_select), make_config=with_retention(FastVIDConfig))
)

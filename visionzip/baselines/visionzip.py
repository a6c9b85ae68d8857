"""``visionzip``: VisionZip (Yang et al., CVPR 2025) on the model's pooled grid, per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as Fn

from ..config import _check_unit_interval
from ..inputs import VideoInput
from ..ops import flat_rows, rank_ascending
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, Selection, compress_on_grid, frame_budgets, pool_scores, with_retention


@dataclass(frozen=True, kw_only=True)
class VisionZipConfig(BaselineConfig):
    """VisionZip (Yang et al., CVPR 2025): per frame, dominant tokens by attention received plus
    contextual tokens merged from the rest. ``contextual_ratio``: share of each frame's budget that
    goes to contextual tokens (VisionZip's 10 of 64)."""

    retention: float
    contextual_ratio: float = 10 / 64
    _METHOD: ClassVar[str] = "visionzip"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit_interval("contextual_ratio", self.contextual_ratio)


def visionzip_select(pooled: torch.Tensor, scores: torch.Tensor, budget: int, contextual_ratio: float) -> Selection:
    """VisionZip (Yang et al., CVPR 2025, "VisionZip: Longer is Better but Not Necessary in Vision
    Language Models"), applied per frame.

    pooled: (F, n, D); scores: (F, n) attention received at the deep layer, pooled to the grid.
    Frame f gets ``b_f`` tokens (``budget`` spread evenly): ``c_f = round(b_f * contextual_ratio)``
    contextual and ``b_f - c_f`` dominant (VisionZip's 54 + 10 of 64 by default).
    1. Dominant: the ``b_f - c_f`` tokens receiving the most attention, emitted as themselves.
    2. Contextual: among the remaining ``r_f`` tokens (row-major), centers at every
       ``max(1, r_f // c_f)``-th one (the first ``c_f``), as VisionZip picks them; every other
       remaining token joins its most similar center (cosine of features) and each center becomes
       the mean of itself and its members.
    Departures: VisionZip runs inside the vision tower on one image (SigLIP layer -2 scores, key
    similarity, before the projector); here on projected, pooled frame tokens with scores pooled to
    the same grid, similarity of features instead of keys; VisionZip's code adds the center to
    its members' mean, here the center and members are averaged; contextual tokens are emitted at
    their center's position (row-major with the dominant ones) rather than after them.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    b = frame_budgets(budget, f_, n).to(dev)  # (F,)
    c = torch.round(b.double() * contextual_ratio).long()  # (F,) contextual
    dom = b - c
    dominant = rank_ascending(-scores.float()) < dom[:, None]  # (F, n)
    rest = ~dominant
    ordinal = rest.long().cumsum(-1) - 1  # position among the remaining tokens
    step = ((n - dom) // c.clamp_min(1)).clamp_min(1)  # (F,)
    centers = rest & (ordinal % step[:, None] == 0) & (ordinal // step[:, None] < c[:, None])
    members = rest & ~centers & (c > 0)[:, None]
    unit = Fn.normalize(pooled.float(), dim=-1)
    cos = torch.bmm(unit, unit.transpose(1, 2))  # (F, n, n)
    target = cos.masked_fill(~centers[:, None, :], float("-inf")).argmax(-1)  # (F, n)
    own = torch.arange(n, device=dev).expand(f_, n)
    target = flat_rows(torch.where(members, target, own), n)
    kept = dominant | centers
    return Selection(kept, members, target.reshape(-1), {"dominant": int(dom.sum()), "contextual": int(centers.sum())})


def _select(pooled: torch.Tensor, video: VideoInput, cfg: VisionZipConfig, budget: int) -> Selection:
    assert video.deep is not None
    return visionzip_select(pooled, pool_scores(video.deep, video.layout), budget, cfg.contextual_ratio)


# dominant tokens: attention received at ``deep_layer``
register_method(MethodSpec("visionzip", VisionZipConfig, compress_on_grid(_select), scores="deep",
                           make_config=with_retention(VisionZipConfig)))

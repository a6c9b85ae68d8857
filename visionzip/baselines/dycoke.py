"""``dycoke``: DyCoke (Tao et al., CVPR 2025), stage 1 (temporal token merging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as Fn

from ..config import _check_int
from ..inputs import VideoInput
from ..ops import rank_ascending
from ..registry import MethodSpec, register_method
from .grid import BaselineConfig, Selection, compress_on_grid, frame_budgets, with_retention


@dataclass(frozen=True, kw_only=True)
class DyCokeConfig(BaselineConfig):
    """DyCoke (Tao et al., CVPR 2025), stage 1 (temporal token merging) in windows of ``window``
    consecutive frames whose first frame is the anchor."""

    retention: float
    window: int = 4
    _METHOD: ClassVar[str] = "dycoke"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("window", self.window, 1)


def dycoke_select(pooled: torch.Tensor, budget: int, window: int) -> Selection:
    """DyCoke (Tao et al., CVPR 2025, "DyCoke: Dynamic Compression of Tokens for Fast Video Large
    Language Models"), stage 1: temporal token merging (TTM).

    pooled: (F, n, D). Frames are cut into windows of ``window`` consecutive frames; the first of
    each is its anchor frame. A token of a later frame is redundant by its cosine similarity to the
    token at the same position of the anchor frame; the video's ``F*n - budget`` most redundant
    later-frame tokens are pruned (globally, most similar first: the similarity threshold that meets
    the budget) and merged by averaging into that anchor token.
    Below the budget TTM can reach (anchor frames whole: about 1/``window`` of the tokens) every
    later-frame token is merged and each anchor frame keeps its share of the budget (spread evenly):
    its most distinct tokens (lowest maximum cosine to another token of the frame); its other tokens
    (with what they absorbed) join their most similar kept token of the frame.
    Departures: DyCoke's code compares frame pairs inside windows of 4 (frames 2, 4 against 1, 3;
    frame 3 against 1) with a fixed pruning ratio per frame and drops pruned tokens; here every later
    frame is compared with its window's anchor, the ratio is set by a global budget, pruned tokens
    are averaged in, and the spatial step below TTM's reach is ours. DyCoke's stage 2 (dynamic
    pruning of the KV cache during decoding) is not implemented: it acts after the prefill, outside
    the visual tokens this harness counts.
    """
    f_, n, d = pooled.shape
    dev = pooled.device
    frame = torch.arange(f_, device=dev)
    anchor_of = (frame // window) * window  # (F,)
    is_anchor = anchor_of == frame
    unit = Fn.normalize(pooled.float(), dim=-1)
    sim = (unit * unit[anchor_of]).sum(-1)  # (F, n) cosine to the anchor frame, same position
    own = frame[:, None] * n + torch.arange(n, device=dev)[None, :]  # (F, n) flat index
    to_anchor = anchor_of[:, None] * n + torch.arange(n, device=dev)[None, :]
    later = ~is_anchor[:, None].expand(f_, n)
    anchor_tokens = int(is_anchor.sum()) * n
    if budget >= anchor_tokens:
        # keep the (budget - anchor tokens) least redundant later-frame tokens
        score = sim.masked_fill(~later, float("-inf")).reshape(-1)  # anchors rank first (never pruned)
        keep = (rank_ascending(score) < budget).view(f_, n)
        target = torch.where(keep, own, to_anchor)
        spatial = 0
    else:
        # every later-frame token merged; anchor frames keep their share by distinctness
        share = frame_budgets(budget, int(is_anchor.sum()), n).to(dev)
        per_frame = torch.zeros(f_, dtype=torch.long, device=dev)
        per_frame[is_anchor] = share
        cos = torch.bmm(unit, unit.transpose(1, 2))  # (F, n, n)
        eye = torch.eye(n, dtype=torch.bool, device=dev)
        distinct = cos.masked_fill(eye, float("-inf")).amax(-1)  # (F, n)
        keep = (rank_ascending(distinct) < per_frame[:, None]) & ~later
        nearest = cos.masked_fill(~keep[:, None, :], float("-inf")).argmax(-1)  # (F, n)
        anchor_target = frame[:, None] * n + nearest
        # a frame with no kept token points at itself: its tokens are dropped below
        anchor_target = torch.where(keep | (per_frame == 0)[:, None], own, anchor_target)
        target = torch.where(later, to_anchor, anchor_target)
        target = target.reshape(-1)[target.reshape(-1)].view(f_, n)  # second hop: later -> anchor -> kept
        spatial = int((~keep & ~later).sum())
    target_flat = target.reshape(-1)
    alive = keep.reshape(-1)[target_flat].view(f_, n)  # folded into an emitted token
    merged = alive & ~keep
    target = torch.where(alive.reshape(-1), target_flat, own.reshape(-1))
    return Selection(keep, merged, target, {"temporal_merged": int((merged & later).sum()), "spatial_merged": spatial})


def _select(pooled: torch.Tensor, video: VideoInput, cfg: DyCokeConfig, budget: int) -> Selection:
    return dycoke_select(pooled, budget, cfg.window)


register_method(MethodSpec("dycoke", DyCokeConfig, compress_on_grid(_select), make_config=with_retention(DyCokeConfig)))

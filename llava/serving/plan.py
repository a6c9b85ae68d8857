"""What the vLLM plugin decides without vLLM's model code: which reduction a spec names, how many
tokens a video keeps (known when the prompt is built, before any feature exists), the reduction
itself on one video's features, and how kept tokens carry their M-RoPE positions through vLLM.

Specs are the ones every entry point takes (a preset, a YAML, ``none``, ``<method>@<retention>`` for
any method in :mod:`visionzip`'s registry), plus ``evs@<retention>`` and ``vidcom2@<retention>``:
vLLM's own EVS and VidCom2 masks (``vllm.multimodal.video_prune``), run through this plugin's path so
that they meet AOT on the same model, frames and budget.

vLLM fixes a video's placeholder count when it builds the prompt, so a reduction served here must
keep a count that depends on the video's layout only. Two adjustments follow, both logged once:

- AOT's exact-budget mode (``aot@<retention>``) emits each clip's keyframe once
  (``keyframe_emit: merged_once``): the release's double emission makes the count depend on how many
  clips the video splits into (one token short when a remainder is odd), which only the features tell.
- AOT with fixed anchors (the paper presets) is refused: its count depends on the clips found. A method
  whose count still changes with the content (checked, per layout, on three synthetic videos) is
  refused with its name.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

import visionzip
from llava.model.qwen_vl.common import qwen_video_layout
from llava.model.seam import VisualSeam

__all__ = ["PLUGIN_KEY", "ServingPlan", "decode_positions", "encode_positions", "serving_plan"]

logger = logging.getLogger(__name__)

#: the ``hf_overrides`` key that switches the plugin on: ``{"aot": "<spec>"}``
PLUGIN_KEY = "aot"
#: extra channels appended to each kept embedding: (hi, lo) base-256 digits of its (t, row, col)
#: position, exact in bfloat16 (whose integers are exact only up to 256) up to 65535
POSITION_CHANNELS = 6
_VLLM_MASKS = ("evs", "vidcom2")


def encode_positions(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(T, D + 6): ``tokens`` (T, D) with their (T, 3) integer positions appended as base-256 digits."""
    pos = positions.to(torch.long)
    if bool((pos < 0).any()) or bool((pos > 65535).any()):
        raise ValueError(f"M-RoPE positions must lie in [0, 65535]; got [{int(pos.min())}, {int(pos.max())}]")
    digits = torch.stack([pos // 256, pos % 256], dim=-1).flatten(1)  # (T, 6): t_hi t_lo h_hi h_lo w_hi w_lo
    return torch.cat([tokens, digits.to(tokens.dtype)], dim=1)


def decode_positions(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode_positions`: ``(tokens (T, D), positions (T, 3) long)``."""
    digits = rows[:, -POSITION_CHANNELS:].float().round().long().view(-1, 3, 2)
    return rows[:, :-POSITION_CHANNELS], digits[..., 0] * 256 + digits[..., 1]


@dataclass(frozen=True)
class ServingPlan:
    """A resolved spec. ``config``: the :mod:`visionzip` config (None for vLLM's masks); ``mask``: ``"evs"``
    or ``"vidcom2"`` (None otherwise) with ``pruning_rate`` = 1 - retention."""

    spec: str
    config: Any = None
    mask: str | None = None
    pruning_rate: float = 0.0

    @property
    def score_roles(self) -> tuple[str, ...]:
        return () if self.config is None else tuple(visionzip.registry.method_of(self.config).score_roles)

    @property
    def name(self) -> str:
        return self.mask or visionzip.registry.method_of(self.config).name

    def token_count(self, t: int, rows: int, cols: int, temporal_patch: int) -> int:
        """Tokens a video of ``t`` temporal tokens on a ``rows`` x ``cols`` merged grid keeps."""
        return _token_count(self, int(t), int(rows), int(cols), int(temporal_patch))

    def reduce(self, features: torch.Tensor, scores: dict[str, torch.Tensor], t: int, rows: int, cols: int,
               temporal_patch: int, cell_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One video: ``features`` (t*rows*cols, D) in raster order, ``scores`` per role (same length),
        ``cell_positions`` (t*rows*cols, 3). Returns the kept tokens (T, D) and their positions (T, 3): a
        token that absorbed others stands at its anchor's cell (the plan's provenance)."""
        n = t * rows * cols
        if self.mask is not None:
            keep = _mask_function(self.mask)(features, (t, rows, cols), 1, self.pruning_rate)
            return features[keep], cell_positions[keep]
        layout = qwen_video_layout(t, rows, cols, temporal_patch)
        seam = VisualSeam(self.config, timed=False, cuda=features.is_cuda, samples=1)
        grid = (t, rows * cols)
        [video] = seam.videos([features.view(*grid, -1)], {r: [s.view(grid)] for r, s in scores.items()}, [layout])
        assert video.result.plan is not None and features.shape[0] == n
        return video.tokens, video.result.plan.gather(cell_positions.view(*grid, 3))


def _mask_function(name: str) -> Any:
    from vllm.multimodal.video_prune import evs, vidcom2

    return {"evs": evs.compute_retention_mask, "vidcom2": vidcom2.compute_retention_mask}[name]


@functools.lru_cache(maxsize=256)
def _token_count(plan: ServingPlan, t: int, rows: int, cols: int, temporal_patch: int) -> int:
    if plan.mask is not None:
        from vllm.multimodal.video_prune import evs, vidcom2

        module = {"evs": evs, "vidcom2": vidcom2}[plan.mask]
        return int(module.compute_retained_tokens_count(rows * cols, t, plan.pruning_rate))
    counts = set()
    for seed in (0, 1, 2):  # three synthetic videos of the layout: noise, and two with still stretches
        g = torch.Generator().manual_seed(seed)
        feats = torch.randn(t * rows * cols, 16, generator=g)
        if seed:
            feats = feats.view(t, rows * cols, 16)
            feats[seed::2] = feats[seed - 1:t - 1:2][: feats[seed::2].shape[0]]
            feats = feats.reshape(-1, 16)
        scores = {r: torch.rand(t * rows * cols, generator=g) for r in plan.score_roles}
        cells = torch.zeros(t * rows * cols, 3, dtype=torch.long)
        tokens, _ = plan.reduce(feats, scores, t, rows, cols, temporal_patch, cells)
        counts.add(int(tokens.shape[0]))
    if len(counts) != 1:
        raise ValueError(
            f"compression {plan.spec!r}: method {plan.name!r} keeps {sorted(counts)} tokens on videos of one "
            f"layout ({t} x {rows} x {cols}); vLLM fixes a video's token count when the prompt is built, so a "
            "served method must keep a count that depends on the layout only (e.g. aot@<retention>, "
            "random@<retention>, visionzip@<retention>, evs@<retention>, vidcom2@<retention>)"
        )
    return counts.pop()


@functools.lru_cache(maxsize=64)
def serving_plan(spec: Any) -> ServingPlan | None:
    """Resolve the ``hf_overrides`` value; None for ``none`` (stock vLLM)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ValueError(f"hf_overrides {{{PLUGIN_KEY!r}: {spec!r}}} is not valid; expected a compression spec string")
    name, sep, value = spec.partition("@")
    if sep and name in _VLLM_MASKS:
        try:
            retention = float(value)
        except ValueError:
            retention = -1.0
        if not 0.0 < retention <= 1.0:
            raise ValueError(
                f"compression {spec!r} is not valid; expected '{name}@<retention>' with retention in (0, 1]"
            )
        return ServingPlan(spec, mask=name, pruning_rate=1.0 - retention)
    config = visionzip.load_config(spec)
    if config is None:
        return None
    visionzip.registry.method_of(config)
    if isinstance(config, visionzip.AOTConfig) and config.token_budget is None:
        raise ValueError(
            f"compression {spec!r} is AOT with fixed anchors (num_anchors={config.num_anchors}), whose token count "
            "depends on the clips each video splits into; vLLM fixes the count when the prompt is built, so serve "
            "AOT's exact-budget mode: aot@<retention>, or token_budget in the YAML"
        )
    if isinstance(config, visionzip.AOTConfig) and config.keyframe_emit == visionzip.KeyframeEmit.PAPER:
        config = config.replace(keyframe_emit=visionzip.KeyframeEmit.MERGED_ONCE)
        logger.warning("compression %r: serving AOT's exact-budget mode with keyframe_emit=merged_once, so that "
                       "every video keeps exactly its budget (vLLM fixes the count when the prompt is built)", spec)
    return ServingPlan(spec, config=config)

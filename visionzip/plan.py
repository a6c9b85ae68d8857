"""What a compression returns: the tokens, where each came from, and the reduction as a plan that
can be applied to any other per-token tensor of the same video.

In the ToMe habit a method computes its plan once (which tokens are kept, which are folded into
which, with what weights) and applies it: ``tokens = plan.apply(features, newline)``. The same plan
applied to another tensor over the same frames and grid (a second feature level, a saliency map)
reduces it identically; :meth:`ReductionPlan.gather` carries per-cell values that must not be
averaged (position ids) to each output token from the cell it stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._checks import check_tensor
from .layout import VideoLayout

#: one stage of a plan: (values, newline or None) -> values
Stage = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class ReductionPlan:
    """The reduction of one video, replayable on any tensor laid out like its features.

    layout:     the video's layout (frames, grid, pooling, newlines)
    stages:     the method's linear stages, in order; :meth:`apply` runs them
    positions:  (T, 3) long, (frame, row, column) on the model's pooled grid of every output token:
                the cell it stands for (for a token that absorbed others, the anchor's own cell);
                for a newline, the frame and row it ends and column -1 (the video's trailing
                newline: last frame, last row)
    is_newline: (T,) bool, the newline tokens
    """

    layout: VideoLayout
    stages: list[Stage]
    positions: torch.Tensor
    is_newline: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    @property
    def cell_index(self) -> torch.Tensor:
        """(T,) long: flat index ``frame * h * w + row * w + column`` on the pooled grid; -1 for newlines."""
        _, w = self.layout.pooled_grid
        n = self.layout.cells_per_frame
        flat = self.positions[:, 0] * n + self.positions[:, 1] * w + self.positions[:, 2]
        return torch.where(self.is_newline, torch.full_like(flat, -1), flat)

    def apply(self, values: torch.Tensor, newline: torch.Tensor | None = None) -> torch.Tensor:
        """Reduce ``values`` (F, N, C), laid out like the features (same frames, same grid as they
        arrive), exactly as the features were: (T, C). ``newline`` (C,) is the value newline tokens
        get (required when the layout emits newlines; the features' own is the layout's embedding).
        Applied to the features with the layout's newline this reproduces the tokens exactly."""
        self.layout.check_features("values", values)
        if self.is_newline.any() and newline is None:
            raise ValueError(
                f"newline is None; expected a ({values.shape[-1]},) tensor: this plan emits "
                f"{int(self.is_newline.sum())} newline token(s)"
            )
        if newline is not None:
            check_tensor("newline", newline, shape=(values.shape[-1],))
        x = values
        for stage in self.stages:
            x = stage(x, newline)
        return x

    def gather(self, cell_values: torch.Tensor, newline: torch.Tensor | float | int | None = None) -> torch.Tensor:
        """Per-cell values on the pooled grid, ``(F, h*w, ...)`` or ``(F*h*w, ...)``, taken to every
        output token from the cell it stands for: ``(T, ...)``. Newline tokens get ``newline``
        (required when the plan has newlines). Use it for position ids and other values that a
        merge must not average."""
        n = self.layout.num_cells
        check_tensor("cell_values", cell_values, ndim=None)
        flat = cell_values.reshape(n, *cell_values.shape[2:]) if cell_values.dim() >= 2 and tuple(
            cell_values.shape[:2]
        ) == (self.layout.frames, self.layout.cells_per_frame) else cell_values
        if flat.shape[0] != n:
            raise ValueError(
                f"cell_values has shape {tuple(cell_values.shape)}; expected ({self.layout.frames}, "
                f"{self.layout.cells_per_frame}, ...) or ({n}, ...): one value per cell of the pooled grid"
            )
        index = self.cell_index.to(flat.device)
        out = flat[index.clamp_min(0)]
        if bool(self.is_newline.any()):
            if newline is None:
                raise ValueError(
                    f"newline is None; expected the value of the {int(self.is_newline.sum())} newline token(s)"
                )
            nl = self.is_newline.to(flat.device)
            fill = torch.as_tensor(newline, dtype=flat.dtype, device=flat.device)
            out = torch.where(nl.view(-1, *([1] * (out.dim() - 1))), fill.expand_as(out) if fill.dim() else fill, out)
        return out


@dataclass
class CompressionResult:
    """What :func:`visionzip.compress_video` returns for one video.

    tokens:        (T, D) visual tokens for the LLM, input dtype, in the order the LLM sees them
    plan:          the :class:`ReductionPlan`: ``plan.apply(features, newline)`` reproduces
                   ``tokens`` exactly; ``plan.positions`` / ``plan.is_newline`` say where every
                   output token comes from
    anchor_mask:   (F, N) bool, AOT's anchors per frame; None for methods without anchors
    pooled_mask:   (F, n) bool, pooled cells kept (before newline insertion); every cell for the
                   baselines (their pooling keeps the whole grid)
    kept_mask:     (F, n') bool, positions emitted as tokens of their own (their value may have
                   absorbed merged tokens, as AOT's anchors do). n' = n, the pooled grid, for every
                   method except AOT with ``grid`` / ``frame`` newlines, whose mask is over its
                   pre-inter sequence, newline positions included (h x (w+1) / n+1), as released;
                   :attr:`kept_grid` gives the (F, n) view for every method
    merged_mask:   (F, n') bool, positions not emitted as themselves whose content was folded into
                   an emitted token; positions in neither mask were dropped. AOT: every position
                   not in ``kept_mask`` (a pruned token is folded into the anchors by the intra OT,
                   a repeated one into the keyframe anchors by the inter OT), so nothing is dropped
    segments:      clip lengths used by the temporal stage ([] when a method has none)
    stage_tokens:  token count after each stage: at least input and output
    retention:     paper definition: (T - newlines) / (F x pooled tokens per frame of the layout)
    pooled_grid:   (h, w) of the pooled frame (n = h*w)
    """

    tokens: torch.Tensor
    anchor_mask: torch.Tensor | None
    pooled_mask: torch.Tensor
    kept_mask: torch.Tensor
    segments: list[int]
    stage_tokens: dict[str, int] = field(default_factory=dict)
    retention: float = 0.0
    merged_mask: torch.Tensor | None = None
    pooled_grid: tuple[int, int] | None = None
    plan: ReductionPlan | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def positions(self) -> torch.Tensor | None:
        """(T, 3) (frame, row, column) of every token on the model's grid (see :class:`ReductionPlan`)."""
        return None if self.plan is None else self.plan.positions

    @property
    def is_newline(self) -> torch.Tensor | None:
        return None if self.plan is None else self.plan.is_newline

    def _on_grid(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(F, n') -> (F, n): drop newline positions (a newline column, or one after the frame)."""
        if mask is None or self.pooled_grid is None:
            return mask
        h, w = self.pooled_grid
        f_, width = mask.shape
        if width == h * w:
            return mask
        if width == h * (w + 1):
            return mask.view(f_, h, w + 1)[:, :, :w].reshape(f_, h * w)
        return mask[:, : h * w]

    @property
    def kept_grid(self) -> torch.Tensor:
        """:attr:`kept_mask` over the pooled grid, (F, n), for every method."""
        out = self._on_grid(self.kept_mask)
        assert out is not None
        return out

    @property
    def merged_grid(self) -> torch.Tensor | None:
        """:attr:`merged_mask` over the pooled grid, (F, n), for every method."""
        return self._on_grid(self.merged_mask)


def emit_positions(
    layout: VideoLayout, seq_index: torch.Tensor, seq_pos: torch.Tensor, seq_newline: torch.Tensor, trailing: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of emitted tokens given, per token, its flat index ``frame * n' + j`` into the
    frames' pooled sequences (n' entries each, with ``seq_pos`` (n', 2) / ``seq_newline`` (n',) from
    :func:`visionzip.layout.sequence_positions`), plus the trailing newline when ``trailing``."""
    width = seq_pos.shape[0]
    idx = seq_index.to("cpu")
    frame = idx // width
    j = idx % width
    pos = torch.cat([frame[:, None], seq_pos[j]], 1)
    nl = seq_newline[j]
    if trailing:
        h, _ = layout.pooled_grid
        pos = torch.cat([pos, torch.tensor([[layout.frames - 1, h - 1, -1]])])
        nl = torch.cat([nl, torch.tensor([True])])
    return pos.long(), nl


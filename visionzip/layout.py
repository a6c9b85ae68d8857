"""A video's token layout, as the model describes it at the seam, and the layout primitives every
method shares (pooling, newlines, grid distances).

The compressor never knows which model it serves: the model hands over a :class:`VideoLayout`
(frames and their temporal grouping, the token grid of each frame as the features arrive, the
pooling the model applies, its newline policy and embedding) and every method reads the layout
from there. Positions are (frame, row, column) on the model's own grid, the pooled grid the LLM
sees without compression.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as Fn

from ._checks import check_choice, check_tensor
from .config import NewlinePosition, PoolMode


@dataclass(frozen=True)
class VideoLayout:
    """How one video's visual tokens are laid out by the model, without compression.

    frames:           frames of features (F); with ``temporal_patch > 1`` one "frame" stands for
                      that many sampled frames (Qwen-VL: 2 frames per temporal token)
    grid:             (H, W) tokens of each frame as the features arrive, N = H * W
    pool_mode:        the model's spatial pooling of each frame (``none``: the features are already
                      the LLM's tokens)
    pool_stride:      its stride (``mm_spatial_pool_stride`` for LLaVA)
    newline_position: where the model puts its learned newline: after every pooled row (``grid``),
                      after every frame (``frame``), once after the video (``one_token``), nowhere
    newline:          the newline embedding (D,), or None when the model has none (then no newline
                      token is emitted whatever the position says)
    temporal_patch:   sampled frames per layout frame (1 for LLaVA)
    """

    frames: int
    grid: tuple[int, int]
    pool_mode: PoolMode = PoolMode.BILINEAR
    pool_stride: int = 2
    newline_position: NewlinePosition = NewlinePosition.ONE_TOKEN
    newline: torch.Tensor | None = field(default=None, compare=False, repr=False)
    temporal_patch: int = 1

    def __post_init__(self) -> None:
        f = self.frames
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"layout frames={f!r} is not valid; expected an integer >= 1")
        g = self.grid
        if not isinstance(g, (tuple, list)) or len(g) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in g
        ):
            raise ValueError(f"layout grid={g!r} is not valid; expected a pair of positive ints (H, W)")
        object.__setattr__(self, "grid", (int(g[0]), int(g[1])))
        object.__setattr__(self, "pool_mode", check_choice("pool_mode", self.pool_mode, PoolMode))
        position = check_choice("newline_position", self.newline_position, NewlinePosition)
        object.__setattr__(self, "newline_position", position)
        s = self.pool_stride
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"layout pool_stride={s!r} is not valid; expected an integer >= 1")
        if self.pool_mode is not PoolMode.NONE and s > min(self.grid):
            raise ValueError(
                f"layout pool_stride={s} is not valid for grid {self.grid}; expected at most {min(self.grid)}"
            )
        t = self.temporal_patch
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"layout temporal_patch={t!r} is not valid; expected an integer >= 1")
        if self.newline is not None:
            check_tensor("layout newline", self.newline, ndim=1, floating=True)

    # -- derived sizes
    @property
    def tokens_per_frame(self) -> int:
        """N = H * W, tokens per frame as the features arrive."""
        return self.grid[0] * self.grid[1]

    @property
    def frame_unit(self) -> str:
        """What one layout frame is, for messages: ``frame``, or ``temporal token`` (of
        ``temporal_patch`` sampled frames) for a model that groups frames."""
        return "frame" if self.temporal_patch == 1 else f"temporal token ({self.temporal_patch} sampled frames)"

    @property
    def pooled_grid(self) -> tuple[int, int]:
        """(h, w) of the model's grid after its pooling (the grid retention is counted on)."""
        return pooled_grid(self.grid, mode=self.pool_mode, stride=self.pool_stride)

    @property
    def cells_per_frame(self) -> int:
        h, w = self.pooled_grid
        return h * w

    @property
    def has_newline(self) -> bool:
        """Whether the model emits any newline token for this video."""
        return self.newline is not None and self.newline_position is not NewlinePosition.NO_TOKEN

    @property
    def newlines_per_frame(self) -> int:
        if not self.has_newline:
            return 0
        if self.newline_position is NewlinePosition.GRID:
            return self.pooled_grid[0]
        return 1 if self.newline_position is NewlinePosition.FRAME else 0

    @property
    def inserted_newline(self) -> NewlinePosition | None:
        """The newline position inserted inside the frames (``grid`` / ``frame``) when the model has a
        newline; None otherwise."""
        if self.has_newline and self.newline_position in (NewlinePosition.GRID, NewlinePosition.FRAME):
            return self.newline_position
        return None

    @property
    def trailing_newline(self) -> bool:
        """One newline after the whole video (``one_token`` with an embedding)."""
        return self.has_newline and self.newline_position is NewlinePosition.ONE_TOKEN

    @property
    def num_newlines(self) -> int:
        return self.frames * self.newlines_per_frame + int(self.trailing_newline)

    @property
    def num_tokens(self) -> int:
        """Length of the model's uncompressed sequence for this video, newlines included."""
        return self.frames * self.cells_per_frame + self.num_newlines

    @property
    def num_cells(self) -> int:
        """Visual tokens of the uncompressed sequence, newlines excluded (retention's denominator)."""
        return self.frames * self.cells_per_frame

    def with_newline(self, newline: torch.Tensor | None) -> VideoLayout:
        return replace(self, newline=newline)

    def positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(F, h*w, 3) long: (frame, row, column) of every cell of the pooled grid, row-major."""
        h, w = self.pooled_grid
        f = torch.arange(self.frames, device=device).repeat_interleave(h * w)
        r = torch.arange(h, device=device).repeat_interleave(w).repeat(self.frames)
        c = torch.arange(w, device=device).repeat(h * self.frames)
        return torch.stack([f, r, c], -1).view(self.frames, h * w, 3)

    def check_features(self, name: str, features: torch.Tensor) -> None:
        """ValueError naming ``name`` unless ``features`` is (frames, H*W, D) for this layout."""
        check_tensor(name, features, ndim=3, floating=True)
        f, n, d = features.shape
        if (f, n) != (self.frames, self.tokens_per_frame):
            raise ValueError(
                f"{name} has shape {tuple(features.shape)}; the layout expects ({self.frames}, "
                f"{self.tokens_per_frame}, D): {self.frames} frames of a {self.grid[0]}x{self.grid[1]} grid"
            )
        if self.newline is not None and self.newline.shape[0] != d:
            raise ValueError(
                f"layout newline has shape {tuple(self.newline.shape)}; expected ({d},) to match the features"
            )


# --------------------------------------------------------------------------------------------------
# Pooling and newlines


def pooled_grid(grid: tuple[int, int], *, mode: PoolMode | str = PoolMode.BILINEAR, stride: int = 2) -> tuple[int, int]:
    """(h, w) after :func:`pool_frames`: ceil for ``bilinear``, floor for ``average`` / ``max``,
    the grid itself for ``none``."""
    h, w = grid
    mode = check_choice("mode", mode, PoolMode)
    if mode is PoolMode.NONE:
        return h, w
    if mode is PoolMode.BILINEAR:
        return math.ceil(h / stride), math.ceil(w / stride)
    return h // stride, w // stride


def _pool_nchw(x: torch.Tensor, mode: PoolMode, stride: int, size: tuple[int, int]) -> torch.Tensor:
    if mode is PoolMode.BILINEAR:
        return Fn.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if mode is PoolMode.AVERAGE:
        return Fn.avg_pool2d(x, stride)
    if mode is PoolMode.MAX:
        return Fn.max_pool2d(x, stride)
    return x


def pool_tokens(features: torch.Tensor, grid: tuple[int, int], mode: PoolMode, stride: int) -> torch.Tensor:
    """The model's pooling of (F, H*W, D) frames -> (F, h*w, D); no checks (internal use)."""
    if mode is PoolMode.NONE:
        return features
    f_, _, d = features.shape
    h, w = grid
    ph, pw = pooled_grid(grid, mode=mode, stride=stride)
    # (F, D, H, W) as a channels-last view: same arithmetic as LLaVA-NeXT's contiguous NCHW call
    # (bit-identical), without the transpose copy and with the vectorised channels-last kernel.
    x = features.contiguous().view(f_, h, w, d).permute(0, 3, 1, 2)
    return _pool_nchw(x, mode, stride, (ph, pw)).permute(0, 2, 3, 1).reshape(f_, ph * pw, d)


def pool_mask(mask: torch.Tensor, grid: tuple[int, int], mode: PoolMode, stride: int) -> torch.Tensor:
    """A (F, H*W) bool mask pooled as a float map, kept where >= 0.5: (F, h*w) bool."""
    if mode is PoolMode.NONE:
        return mask
    f_ = mask.shape[0]
    h, w = grid
    ph, pw = pooled_grid(grid, mode=mode, stride=stride)
    return _pool_nchw(mask.to(torch.float32).view(f_, 1, h, w), mode, stride, (ph, pw)).reshape(f_, ph * pw) >= 0.5


def pool_frames(
    features: torch.Tensor,
    mask: torch.Tensor,
    *,
    grid: tuple[int, int],
    mode: PoolMode | str = "bilinear",
    stride: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaVA-NeXT's 2D pooling of every frame, applied to features and (as a float map) to the mask.

    features: (F, N, D); mask: (F, N) bool. Returns ``(pooled (F, n, D), pooled_mask (F, n) bool)``
    where a pooled cell is kept when its pooled mask value is >= 0.5. ``bilinear`` interpolates to
    ``ceil(H/stride) x ceil(W/stride)`` (align_corners=False); ``average`` is ``avg_pool2d(stride)``;
    ``max`` is ``max_pool2d(stride)``; ``none`` returns the inputs.
    """
    from ._checks import check_finite, check_grid, check_mask

    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    h, w = check_grid(grid, n)
    mask = check_mask("mask", mask, (f_, n))
    mode = check_choice("mode", mode, PoolMode)
    check_finite("features", features)
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= min(h, w):
        raise ValueError(f"stride={stride!r} is not valid; expected an integer in [1, {min(h, w)}]")
    return pool_tokens(features, (h, w), mode, stride), pool_mask(mask, (h, w), mode, stride)


@functools.lru_cache(maxsize=64)
def pooling_matrix(grid: tuple[int, int], mode: PoolMode, stride: int, device: torch.device) -> torch.Tensor:
    """(N, n) float32 matrix of a linear pooling map (``pooled = M.T @ frame``), by pooling the
    identity; built once per (grid, mode, stride, device). ``max`` is not linear: not available."""
    if mode is PoolMode.MAX:
        raise ValueError("pool_mode='max' is not linear; expected 'bilinear', 'average' or 'none'")
    h, w = grid
    n = h * w
    eye = torch.eye(n, device=device, dtype=torch.float32)
    if mode is PoolMode.NONE:
        return eye
    ph, pw = pooled_grid(grid, mode=mode, stride=stride)
    return _pool_nchw(eye.view(n, 1, h, w), mode, stride, (ph, pw)).reshape(n, ph * pw)


@functools.lru_cache(maxsize=64)
def grid_distances(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(N, N) Euclidean distance between token positions (col/(W-1), row/(H-1)); built once per
    (grid, device)."""
    rows = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w) / max(h - 1, 1)
    cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h) / max(w - 1, 1)
    pos = torch.stack([cols, rows], dim=-1)  # (N, 2) as (x, y)
    return torch.cdist(pos[None], pos[None])[0]


def newline_values(
    features: torch.Tensor, newline: torch.Tensor, grid: tuple[int, int], position: NewlinePosition
) -> torch.Tensor:
    """(F, h*w, D) frames with the newline after every row (``grid``) or frame (``frame``); no checks."""
    f_, _, d = features.shape
    h, w = grid
    nl = newline.to(device=features.device, dtype=features.dtype)
    if position is NewlinePosition.GRID:
        return torch.cat([features.view(f_, h, w, d), nl.expand(f_, h, 1, d)], dim=2).reshape(f_, h * (w + 1), d)
    return torch.cat([features, nl.expand(f_, 1, d)], dim=1)


def append_newline(tokens: torch.Tensor, newline: torch.Tensor | None) -> torch.Tensor:
    """(T, D) tokens with the video's trailing newline after them."""
    assert newline is not None
    return torch.cat([tokens, newline.to(device=tokens.device, dtype=tokens.dtype)[None]])


def add_newlines(
    features: torch.Tensor, mask: torch.Tensor, newline: torch.Tensor, grid: tuple[int, int], position: NewlinePosition
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`insert_newlines` without checks (internal use)."""
    return newline_values(features, newline, grid, position), newline_mask(mask, grid, position)


def newline_mask(mask: torch.Tensor, grid: tuple[int, int], position: NewlinePosition) -> torch.Tensor:
    """A (F, h*w) mask extended by the newline positions of ``position`` (always kept)."""
    f_ = mask.shape[0]
    h, w = grid
    if position is NewlinePosition.GRID:
        return torch.cat([mask.view(f_, h, w), mask.new_ones(f_, h, 1)], dim=2).reshape(f_, h * (w + 1))
    return torch.cat([mask, mask.new_ones(f_, 1)], dim=1)


def kept_with_newlines(
    pooled: torch.Tensor,
    newline: torch.Tensor | None,
    grid: tuple[int, int],
    position: NewlinePosition,
    mask: torch.Tensor,
    *,
    compact: bool = False,
) -> torch.Tensor:
    """(T, D) the entries of ``newline_values(pooled, newline, grid, position)`` that
    ``newline_mask(mask, grid, position)`` keeps, in the same order, copied from the pooled frames
    (F, h*w, D) without building the (F, n', D) sequence; no checks. ``compact``: ``pooled`` holds
    only each frame's kept tokens, (F, k, D) in ascending position (``front_indices(mask)`` order,
    padded)."""
    assert newline is not None
    f_, _, d = pooled.shape
    n = mask.shape[1]
    h, w = grid
    if position is NewlinePosition.GRID:
        slot = torch.arange(h * (w + 1), device=pooled.device)
        col = slot % (w + 1)
        is_nl, src = col == w, (slot // (w + 1)) * w + col.clamp(max=w - 1)
    else:
        slot = torch.arange(n + 1, device=pooled.device)
        is_nl, src = slot == n, slot.clamp(max=n - 1)
    frame, entry = torch.nonzero(newline_mask(mask, grid, position)).unbind(1)  # row-major, as boolean indexing
    if compact:  # a kept token's slot is its rank among its frame's kept tokens; a newline reads slot 0
        width = pooled.shape[1]
        if width == 0:  # no frame keeps a token: only newlines
            return newline.to(device=pooled.device, dtype=pooled.dtype).expand(int(frame.numel()), d).clone()
        slot = (mask.long().cumsum(-1) - 1).clamp_min(0)[frame, src[entry]]
        tokens = pooled.reshape(-1, d).index_select(0, frame * width + torch.where(is_nl[entry], 0, slot))
    else:
        tokens = pooled.reshape(f_ * n, d).index_select(0, frame * n + src[entry])
    tokens[is_nl[entry]] = newline.to(device=pooled.device, dtype=pooled.dtype)
    return tokens


def insert_newlines(
    features: torch.Tensor,
    mask: torch.Tensor,
    image_newline: torch.Tensor,
    *,
    grid: tuple[int, int],
    position: NewlinePosition | str = NewlinePosition.GRID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the learned newline after every row (``grid``: (F, h*(w+1), D)) or after every frame
    (``frame``: (F, n+1, D)). Newline positions are always kept (mask True)."""
    from ._checks import check_grid

    check_tensor("features", features, ndim=3, floating=True)
    f_, n, d = features.shape
    h, w = check_grid(grid, n, what="pooled tokens")
    check_tensor("image_newline", image_newline, shape=(d,), floating=True)
    position = check_choice("position", position, NewlinePosition)
    if position not in (NewlinePosition.GRID, NewlinePosition.FRAME):
        raise ValueError(f"position={position.value!r} is not valid here; expected 'grid' or 'frame'")
    return add_newlines(features, mask, image_newline, (h, w), position)


def sequence_positions(
    layout: VideoLayout, position: NewlinePosition | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid position of every entry of a frame's pooled sequence with the newlines of ``position``
    inserted (default: the layout's own): ``(pos (n', 2) long (row, column), is_newline (n',) bool)``;
    a newline gets the row it ends and column -1."""
    h, w = layout.pooled_grid
    position = layout.newline_position if position is None else position
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    if position is NewlinePosition.GRID:
        rows = torch.arange(h).repeat_interleave(w + 1)
        cols = torch.arange(w + 1).repeat(h)
        nl = cols == w
        cols = torch.where(nl, torch.full_like(cols, -1), cols)
        return torch.stack([rows, cols], -1), nl
    if position is NewlinePosition.FRAME:
        rows = torch.cat([rows, torch.tensor([h - 1])])
        cols = torch.cat([cols, torch.tensor([-1])])
        return torch.stack([rows, cols], -1), torch.arange(h * w + 1) == h * w
    return torch.stack([rows, cols], -1), torch.zeros(h * w, dtype=torch.bool)

"""The public boundary: one video's inputs as every method receives them, and their validation.

Inputs are checked here once; the methods and their stages trust what they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._checks import check_finite, check_grid, check_tensor, checked_token_norms
from .config import NewlinePosition, OneTokenNewline, PoolMode
from .layout import VideoLayout


@dataclass
class VideoInput:
    """One video as a method receives it.

    features: (F, N, D) frame tokens as they come out of the model's projector / merger
    layout:   the model's :class:`VideoLayout` for this video (frames and grid match ``features``)
    shallow:  (F, N) attention each token receives at the config's ``shallow_layer``, when the
              method reads it (None otherwise)
    deep:     (F, N) the same at ``deep_layer``
    question: the question text, for methods that read it (None otherwise)
    norms:    (F, N) float32 Euclidean norm of every token (accumulated in at least float32), computed
              by the input check (whose finiteness test they are); None when not computed
    """

    features: torch.Tensor
    layout: VideoLayout
    shallow: torch.Tensor | None = None
    deep: torch.Tensor | None = None
    question: str | None = None
    norms: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.features.shape[0])


def as_video_list(name: str, value: object, ndim: int) -> tuple[list[torch.Tensor], bool]:
    """Split a single video, a stacked batch or a list of videos into a list; report if batched."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name} is an empty list; expected at least one video")
        for i, v in enumerate(value):
            check_tensor(f"{name}[{i}]", v, ndim=ndim)
        return list(value), True
    check_tensor(name, value, ndim=(ndim, ndim + 1))
    assert isinstance(value, torch.Tensor)
    if value.dim() == ndim + 1:
        return list(value.unbind(0)), True
    return [value], False


def layout_from_grid(
    config: Any, grid: object, frames: int, n: int, d: int, image_newline: torch.Tensor | None
) -> VideoLayout:
    """The layout the pure-tensor API uses when no model supplies one: ``grid`` plus the config's
    layout overrides (None: the release's LLaVA-OneVision layout, bilinear / 2 / one_token), with
    ``image_newline`` as the newline embedding."""
    h, w = check_grid(grid, n)
    mode = getattr(config, "pool_mode", None) or PoolMode.BILINEAR
    stride = getattr(config, "pool_stride", None) or 2
    position = getattr(config, "newline_position", None) or NewlinePosition.ONE_TOKEN
    if mode is not PoolMode.NONE and stride > min(h, w):
        raise ValueError(f"config.pool_stride={stride} is not valid for grid {(h, w)}; expected at most {min(h, w)}")
    append = getattr(config, "one_token_newline", None) is OneTokenNewline.APPEND
    inserted = position in (NewlinePosition.GRID, NewlinePosition.FRAME)
    needs = inserted or (position is NewlinePosition.ONE_TOKEN and append)
    if needs and image_newline is None:
        raise ValueError(
            f"image_newline is None; expected a ({d},) tensor for newline_position={position.value!r}"
            + (" with one_token_newline='append'" if position is NewlinePosition.ONE_TOKEN else "")
        )
    if image_newline is not None:
        check_tensor("image_newline", image_newline, shape=(d,), floating=True)
        check_finite("image_newline", image_newline)
    return VideoLayout(frames=frames, grid=(h, w), pool_mode=mode, pool_stride=stride, newline_position=position,
                       newline=image_newline)


def gather_inputs(
    features: torch.Tensor | Sequence[torch.Tensor],
    shallow_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    deep_scores: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    config: Any,
    method: str,
    score_roles: Sequence[str],
    grid: object,
    image_newline: torch.Tensor | None,
    layout: VideoLayout | Sequence[VideoLayout] | None,
    question: str | Sequence[str | None] | None,
) -> tuple[list[VideoInput], bool]:
    """Validate the public arguments once and pair every video with its layout and scores.
    ``score_roles``: the score maps the method reads (``"shallow"``, ``"deep"``)."""
    feats, batched = as_video_list("features", features, 3)
    d = feats[0].shape[-1]
    norms: list[torch.Tensor] = []
    for i, x in enumerate(feats):
        tag = f"[{i}]" if batched else ""
        check_tensor(f"features{tag}", x, ndim=3, floating=True)
        if x.shape[-1] != d:
            raise ValueError(f"features{tag} has shape {tuple(x.shape)}; expected (*, *, {d}) like features[0]")
        if x.shape[0] == 0:
            raise ValueError(f"features{tag} has 0 frames; expected at least 1")
        norms.append(checked_token_norms(f"features{tag}", x))
    if layout is not None:
        layouts = list(layout) if isinstance(layout, (list, tuple)) else [layout] * len(feats)
        if len(layouts) != len(feats):
            raise ValueError(f"layout holds {len(layouts)} layouts for {len(feats)} videos; expected one per video")
        for i, (x, lay) in enumerate(zip(feats, layouts)):
            if not isinstance(lay, VideoLayout):
                raise ValueError(f"layout must be a visionzip.VideoLayout (or one per video); got {type(lay).__name__}")
            lay.check_features(f"features[{i}]" if batched else "features", x)
    else:
        if grid is None:
            raise ValueError("grid=None and no layout given; expected grid=(H, W) or the model's VideoLayout (layout=)")
        n = feats[0].shape[1]
        for i, x in enumerate(feats):
            if x.shape[1] != n:
                tag = f"[{i}]" if batched else ""
                raise ValueError(f"features{tag} has shape {tuple(x.shape)}; expected (*, {n}, {d}) like features[0]")
        layouts = [layout_from_grid(config, grid, x.shape[0], n, d, image_newline) for x in feats]
    maps: dict[str, list[torch.Tensor | None]] = {"shallow": [None] * len(feats), "deep": [None] * len(feats)}
    given: dict[str, list[torch.Tensor]] = {}
    for role, value in (("shallow", shallow_scores), ("deep", deep_scores)):
        if role not in score_roles:
            continue
        arg = f"{role}_scores"
        if value is None:
            raise ValueError(
                f"{arg} is None (NoneType); expected (F, N) attention scores: method {method!r} reads them"
            )
        given[role] = as_video_list(arg, value, 2)[0]
    if any(len(v) != len(feats) for v in given.values()):
        names = ["features", *(f"{r}_scores" for r in given)]
        counts = [len(feats), *(len(v) for v in given.values())]
        raise ValueError(
            f"{', '.join(names[:-1])} and {names[-1]} hold {', '.join(map(str, counts[:-1]))} and {counts[-1]} "
            "videos; expected the same number"
        )
    for role, vals in given.items():
        arg = f"{role}_scores"
        for i, (x, s) in enumerate(zip(feats, vals)):
            tag = f"[{i}]" if batched else ""
            check_tensor(f"{arg}{tag}", s, shape=(x.shape[0], x.shape[1]), floating=True)
            check_finite(f"{arg}{tag}", s)
        maps[role] = [s.to(x.device) for x, s in zip(feats, vals)]
    questions = list(question) if isinstance(question, (list, tuple)) else [question] * len(feats)
    if len(questions) != len(feats):
        raise ValueError(f"question holds {len(questions)} entries for {len(feats)} videos; expected one per video")
    videos = [
        VideoInput(x, lay, s, t, q, nrm)
        for x, lay, s, t, q, nrm in zip(feats, layouts, maps["shallow"], maps["deep"], questions, norms)
    ]
    return videos, batched

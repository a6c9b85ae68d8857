"""The shared parts of every compression method's config, and AOT's config.

Every method's config is a validated frozen dataclass deriving :class:`MethodConfig` (dict / YAML
round trip, ``replace``; its ``_METHOD`` name is the one it registers under in
:mod:`visionzip.registry`). The built-in baselines' configs live in their own modules under
``visionzip/baselines/``, each beside its method.

AOT (:class:`AOTConfig`): every default reproduces the authors' release (the ``paper`` behaviour,
docs/algorithm.md). Each place where the release departs from the paper text is a named field whose
first value is ``"paper"``; the other value does the obvious correct thing. AOT's stages
(:mod:`visionzip.anchors`, :mod:`visionzip.intra`, :mod:`visionzip.inter`, :mod:`visionzip.budget`)
read their keyword defaults from it, so it lives here rather than in :mod:`visionzip.aot`.

The token layout (grid, pooling, newlines) is not a method hyperparameter: the model supplies it as
a :class:`visionzip.VideoLayout`. The ``pool_mode`` / ``pool_stride`` / ``newline_position`` fields
default to None (the model's layout); set, they are read only by the pure-tensor API called with
``grid=`` (where None means the release's LLaVA-OneVision layout), never over a model's layout.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ._checks import check_choice


class PoolMode(str, Enum):
    BILINEAR = "bilinear"  # LLaVA-OneVision: interpolate to ceil(H/s) x ceil(W/s)
    AVERAGE = "average"  # LLaVA-Video as evaluated: avg_pool2d(s), remainder dropped
    MAX = "max"  # max_pool2d(s) (LLaVA-NeXT's third mode)
    NONE = "none"  # no pooling: the features are already the LLM's tokens (Qwen-VL's merger did it)


class NewlinePosition(str, Enum):
    ONE_TOKEN = "one_token"  # one newline after the whole video (see ``one_token_newline``)
    GRID = "grid"  # a newline after every pooled row of every frame
    FRAME = "frame"  # a newline after every frame
    NO_TOKEN = "no_token"  # no newline at all


class KeyframeEmit(str, Enum):
    """Quirk 1: the release emits each clip's keyframe twice (original, then merged)."""

    PAPER = "paper"
    MERGED_ONCE = "merged_once"


class OneTokenNewline(str, Enum):
    """Quirk 2: in ``one_token`` mode the release never appends the newline (a broken env check)."""

    PAPER = "paper"  # no newline
    APPEND = "append"  # the model's newline after the video, as LLaVA-NeXT does without compression


class Scales(str, Enum):
    """Quirk 3: the release hard-wires the intra scale to 1.0 and its ``grid`` path uses that intra
    scale for the inter-frame stage."""

    PAPER = "paper"
    CONFIGURED = "configured"  # intra stage uses ``intra_scale``, inter stage ``inter_scale``


class SinkhornStop(str, Enum):
    """Quirk 4a: the release stops when mean |r - r_prev| < tol, an absolute test on r (about 1/n),
    so it stops after 2-3 iterations."""

    PAPER = "paper"
    MARGINAL = "marginal"  # stop when the row-marginal violation is below tol x total mass


class OTMass(str, Enum):
    """Quirk 4b: the plan has total mass 1, so the OT term moves an anchor by about 1/(n_r + 1)."""

    PAPER = "paper"
    PER_TOKEN = "per_token"  # rescale the plan so every merged token carries mass 1


class Segmentation(str, Enum):
    """Quirk 5: the release only ran 32 or 64 frames cut into equal clips; its dynamic segmentation
    was commented out. ``uniform`` equals the release wherever the release ran and extends it to any
    frame count (clips as even as possible, longer clips first)."""

    UNIFORM = "uniform"
    DYNAMIC = "dynamic"  # FastVID-style cuts at low consecutive-frame similarity (docs/algorithm.md)


class InterKeep(str, Enum):
    """How many tokens of a later frame the inter-frame stage keeps as distinct. The release keeps
    ``m_i < quantile(m, keep_ratio)``, which keeps about ``keep_ratio * (n - 1)`` and always folds
    the most redundant token, even at ``keep_ratio = 1``."""

    PAPER = "paper"
    EXACT = "exact"  # exactly round(keep_ratio * n) tokens with the lowest m (ties: earlier first)


class AnchorBudget(str, Enum):
    """Quirk 6: with the local budget not divisible by the window count the release selects fewer
    than ``num_anchors`` anchors (and may pick a local anchor again as a global one)."""

    PAPER = "paper"
    EXACT = "exact"  # always exactly ``num_anchors`` distinct anchors per frame


_ENUM_FIELDS: dict[str, type[Enum]] = {
    "pool_mode": PoolMode,
    "newline_position": NewlinePosition,
    "keyframe_emit": KeyframeEmit,
    "one_token_newline": OneTokenNewline,
    "scales": Scales,
    "sinkhorn_stop": SinkhornStop,
    "ot_mass": OTMass,
    "segmentation": Segmentation,
    "anchor_budget": AnchorBudget,
    "inter_keep": InterKeep,
}


_LAYOUT_FIELDS = ("pool_mode", "pool_stride", "newline_position", "one_token_newline")


class MethodConfig:
    """Base of every method's config dataclass: its ``_METHOD`` name (the name it registers under),
    dict / YAML round trip and ``replace``."""

    _METHOD: ClassVar[str]

    @property
    def method(self) -> str:
        """The registered name of the method this config belongs to."""
        return self._METHOD

    def replace(self, **overrides: Any) -> Any:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    @classmethod
    def method_name(cls) -> str:
        return cls._METHOD

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Any:
        data = dict(data)
        method = data.pop("method", cls.method_name())
        if method != cls.method_name():
            raise ValueError(f"{source}: method={method!r} is not valid here; expected {cls.method_name()!r}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown {cls.__name__} key(s) {unknown}; expected keys among {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Any:
        data = read_yaml_mapping(path, what=f"{cls.__name__} fields")
        return cls.from_dict(data, source=str(path))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump({"method": self.method, **self.to_dict()}, sort_keys=False))


def read_yaml_mapping(path: str | Path, *, what: str = "config fields") -> dict[str, Any]:
    """The mapping a YAML config file holds; ``ValueError`` naming the path otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config path {str(path)!r} does not exist; expected a YAML file")
    with path.open() as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a YAML mapping of {what}, got {type(data).__name__}")
    return dict(data)


@dataclass(frozen=True)
class AOTConfig(MethodConfig):
    """Hyperparameters of AOT (anchor selection, intra-frame OT, pooling, inter-frame OT).

    The defaults are the paper's LLaVA-OneVision-7B MVBench/EgoSchema setting as released
    (126 anchors, keep ratio 0.3, bilinear pooling, ``one_token`` newline, 8 clips).
    """

    # -- anchors (docs/algorithm.md §1); None: calibrated per video from ``token_budget`` and the layout
    num_anchors: int | None = 126
    global_ratio: float = 0.5
    # side of the non-overlapping local-anchor windows; None: chosen per video from its grid
    # (visionzip.anchors.resolve_window: 3 windows along the shorter side, 9 on 27x27)
    window: int | None = 9
    shallow_layer: int = 5  # vision layer whose attention scores pick local anchors
    deep_layer: int = -2  # vision layer whose attention scores pick global anchors
    # -- intra-frame OT (docs/algorithm.md §2)
    intra_epsilon: float = 0.1
    position_weight: float = 0.5
    ot_weight: float = 0.9  # blend: ot_weight * OT update + (1 - ot_weight) * nearest-neighbour update
    intra_scale: float = 1.0
    # -- layout overrides: None (the default) takes the model's layout; a value is used only where no
    # model supplies one (the pure-tensor API with ``grid=``), where None means the release's
    # LLaVA-OneVision layout (bilinear, stride 2, one_token)
    pool_mode: PoolMode | None = None
    pool_stride: int | None = None
    newline_position: NewlinePosition | None = None
    # -- inter-frame OT (docs/algorithm.md §4)
    inter_frame: bool = True
    keep_ratio: float = 0.3
    num_clips: int = 8
    inter_sigma: float = 1.5
    inter_epsilon: float = 0.1
    inter_scale: float = 1.0
    segment_threshold: float = 0.8  # dynamic segmentation: also cut wherever similarity < this
    # -- Sinkhorn
    sinkhorn_max_iter: int = 100
    sinkhorn_tol: float = 1e-2
    # -- quirks of the release (``paper`` reproduces it)
    keyframe_emit: KeyframeEmit = KeyframeEmit.PAPER
    one_token_newline: OneTokenNewline = OneTokenNewline.PAPER
    scales: Scales = Scales.PAPER
    sinkhorn_stop: SinkhornStop = SinkhornStop.PAPER
    ot_mass: OTMass = OTMass.PAPER
    segmentation: Segmentation = Segmentation.UNIFORM
    anchor_budget: AnchorBudget = AnchorBudget.PAPER
    inter_keep: InterKeep = InterKeep.PAPER
    # -- exact-budget mode (not in the release; None reproduces it)
    token_budget: float | None = None  # target retention (paper definition); output hits it exactly

    _METHOD: ClassVar[str] = "aot"

    def __post_init__(self) -> None:
        for name, enum in _ENUM_FIELDS.items():
            if getattr(self, name) is not None or name not in _LAYOUT_FIELDS:
                object.__setattr__(self, name, check_choice(name, getattr(self, name), enum))
        for name in ("num_anchors", "window", "pool_stride", "num_clips", "sinkhorn_max_iter"):
            value = getattr(self, name)
            if value is None and name in ("num_anchors", "pool_stride", "window"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")
        if self.num_anchors is None and self.token_budget is None:
            raise ValueError(
                "num_anchors=None is not valid without token_budget; expected an anchor count, or a "
                "token_budget from which the anchors are calibrated for each video's layout"
            )
        for name in ("shallow_layer", "deep_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}={value!r} is not valid; expected an integer layer index")
        if not isinstance(self.inter_frame, bool):
            raise ValueError(f"inter_frame={self.inter_frame!r} is not valid; expected true or false")
        for name in ("global_ratio", "keep_ratio", "ot_weight", "segment_threshold"):
            _check_unit_interval(name, getattr(self, name))
        for name in ("intra_epsilon", "inter_epsilon", "inter_sigma", "sinkhorn_tol"):
            value = getattr(self, name)
            if not _is_real(value) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} is not valid; expected a finite number > 0")
        for name in ("position_weight", "intra_scale", "inter_scale"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} is not valid; expected a finite number >= 0")
        if self.token_budget is not None and (not _is_real(self.token_budget) or not 0.0 < self.token_budget <= 1.0):
            raise ValueError(
                f"token_budget={self.token_budget!r} is not valid; expected None or a retention in (0, 1]"
            )

    # -- derived values (returned, never written back)
    @property
    def effective_intra_scale(self) -> float:
        return 1.0 if self.scales is Scales.PAPER else float(self.intra_scale)

    @property
    def effective_inter_scale(self) -> float:
        return self.inter_scale_for(self.newline_position)

    def inter_scale_for(self, newline_position: NewlinePosition | None) -> float:
        """The inter-frame stage's scale on a layout with this newline position."""
        if self.scales is Scales.PAPER and newline_position is NewlinePosition.GRID:
            return self.effective_intra_scale  # the release's grid path read the intra scale
        return float(self.inter_scale)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_unit_interval(name: str, value: Any) -> None:
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is not valid; expected a number in [0, 1]")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {low}")

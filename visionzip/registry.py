"""The method registry: every compression method is one :class:`MethodSpec` registered by name.

A method is a config class (a frozen dataclass with a ``_METHOD`` name, see
:class:`visionzip.config.MethodConfig`), a function that compresses a list of validated
:class:`~visionzip.inputs.VideoInput` with that config, and what it reads: attention scores (none,
the deep layer only, shallow and deep; the vision tower captures only those) and the question text.
``list_methods``, ``make_config``, ``load_config``, the presets, the sweep and the model seam all
read this registry; nothing dispatches on config types.

A new method is one module that defines its config and compress function and calls
:func:`register_method`, plus a preset YAML. Methods in other packages register through the entry
point group ``visionzip.methods`` (an entry point naming the module, imported on first lookup).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Scores = Literal["none", "deep", "shallow_deep"]
_SCORE_ROLES: dict[str, tuple[str, ...]] = {"none": (), "deep": ("deep",), "shallow_deep": ("shallow", "deep")}


@dataclass(frozen=True)
class MethodSpec:
    """One registered compression method.

    name:           the name users write (``"<name>@<retention>"``, ``method:`` in YAML)
    config_class:   its config dataclass (``from_dict`` / ``to_dict`` / ``replace``)
    compress:       ``compress(videos: list[VideoInput], config) -> list[CompressionResult]``
    scores:         attention scores it reads: ``none``, ``deep`` (``config.deep_layer``) or
                    ``shallow_deep`` (``config.shallow_layer`` and ``config.deep_layer``)
    reads_question: whether it reads the question text (``VideoInput.question``)
    make_config:    ``make_config(retention, layout, **overrides) -> config`` for
                    ``"<name>@<retention>"``; None: ``config_class(retention=..., **overrides)``
    """

    name: str
    config_class: type
    compress: Callable[..., list[Any]]
    scores: Scores = "none"
    reads_question: bool = False
    make_config: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "@" in self.name or "/" in self.name:
            raise ValueError(f"method name {self.name!r} is not valid; expected a non-empty name without '@' or '/'")
        if self.scores not in _SCORE_ROLES:
            raise ValueError(
                f"method {self.name!r}: scores={self.scores!r} is not valid; expected one of {sorted(_SCORE_ROLES)}"
            )
        declared = getattr(self.config_class, "_METHOD", None)
        if declared != self.name:
            raise ValueError(
                f"method {self.name!r}: config class {self.config_class.__name__} declares _METHOD={declared!r}; "
                f"expected {self.name!r}"
            )

    @property
    def score_roles(self) -> tuple[str, ...]:
        """``("shallow", "deep")``, ``("deep",)`` or ``()``."""
        return _SCORE_ROLES[self.scores]

    def score_layers(self, config: Any) -> tuple[int, ...]:
        """The vision layers whose attention scores this method reads with ``config``, in the order
        of :attr:`score_roles`."""
        return tuple(int(getattr(config, f"{role}_layer")) for role in self.score_roles)


_REGISTRY: dict[str, MethodSpec] = {}
_entry_points_loaded = False


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Register a method; ``ValueError`` if the name is taken (unless ``replace``)."""
    if not isinstance(spec, MethodSpec):
        raise ValueError(f"register_method expects a visionzip.MethodSpec; got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise ValueError(f"method {spec.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a registered method (tests register toy methods and remove them again)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="visionzip.methods"):
        loaded = ep.load()
        if isinstance(loaded, MethodSpec):
            register_method(loaded)


def list_methods() -> list[str]:
    """Names of every registered compression method, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_method(name: Any) -> MethodSpec:
    """The registered method called ``name``; ``ValueError`` listing the registered ones otherwise."""
    key = str(name)
    if key not in _REGISTRY:
        _load_entry_points()
    if key not in _REGISTRY:
        choices = ", ".join(repr(m) for m in list_methods())
        raise ValueError(f"method={key!r} is not registered; expected one of {choices}")
    return _REGISTRY[key]


def method_of(config: Any) -> MethodSpec:
    """The registered method a config object belongs to (by its ``method`` name and class)."""
    name = getattr(config, "method", None)
    if not isinstance(name, str) or name not in _REGISTRY:
        _load_entry_points()
    if not isinstance(name, str) or name not in _REGISTRY or not isinstance(config, _REGISTRY[name].config_class):
        names = ", ".join(s.config_class.__name__ for s in _REGISTRY.values())
        raise ValueError(f"config must be a registered method's config ({names}); got {type(config).__name__}")
    return _REGISTRY[name]


def config_classes() -> tuple[type, ...]:
    """The config classes of every registered method."""
    _load_entry_points()
    return tuple(s.config_class for s in _REGISTRY.values())

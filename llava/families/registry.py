"""The family registry: every model family is one :class:`~llava.families.spec.FamilySpec` registered by name.

The built-in families are registered when this module is imported; families in other packages
register through the entry point group ``aot.families`` (an entry point naming a ``FamilySpec``),
loaded on the first lookup that needs them.
"""

from __future__ import annotations

from llava.families.infer import checkpoint_model_type
from llava.families.llava_next import LLAVA_ONEVISION, LLAVA_VIDEO
from llava.families.qwen_vl import QWEN2_5_VL, QWEN3_VL
from llava.families.spec import FamilySpec

#: the entry point group outside packages register their families in
ENTRY_POINT_GROUP = "aot.families"
#: the family of the original LLaVA-NeXT layout: what a checkpoint runs as when its ``model_type`` is
#: unreadable or no family claims it (its loader then names what it cannot read), and the family of
#: ``aot demo``, ``aot viz``, ``aot tiny-checkpoint`` and ``aot sweep`` when none is given
DEFAULT_FAMILY = LLAVA_ONEVISION.name

_REGISTRY: dict[str, FamilySpec] = {}
_entry_points_loaded = False


def register_family(spec: FamilySpec, *, replace: bool = False) -> FamilySpec:
    """Register a family; ``ValueError`` if its name, its plugin model id or an auto-detected
    ``model_type`` is another family's (unless ``replace``, which overrides a family of the same name)."""
    if not isinstance(spec, FamilySpec):
        raise ValueError(f"register_family expects a llava.families.FamilySpec; got {type(spec).__name__}")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec and not replace:
        raise ValueError(f"family {spec.name!r} is already registered; pass replace=True to override it")
    for other in _REGISTRY.values():
        if other.name == spec.name:
            continue
        if other.plugin.model_id == spec.plugin.model_id:
            raise ValueError(f"family {spec.name!r}: plugin model_id {spec.plugin.model_id!r} is family "
                             f"{other.name!r}'s; expected a model id of its own")
        clash = sorted(set(other.model_types) & set(spec.model_types)) if other.auto_detect and spec.auto_detect else []
        if clash:
            raise ValueError(f"family {spec.name!r}: model_type {clash[0]!r} is auto-detected as family "
                             f"{other.name!r}; expected auto_detect=False (chosen with --family) or a "
                             "model_type of its own")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_family(name: str) -> None:
    """Remove a registered family (tests register toy families and remove them again)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        if not isinstance(loaded, FamilySpec):
            raise ValueError(f"entry point {ep.name} = {ep.value!r} in group {ENTRY_POINT_GROUP!r} is a "
                             f"{type(loaded).__name__}; expected a llava.families.FamilySpec")
        register_family(loaded)


def list_families() -> list[str]:
    """Names of every registered family (entry points included), sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def families() -> list[FamilySpec]:
    """Every registered family, sorted by name."""
    return [_REGISTRY[name] for name in list_families()]


def get_family(name: str) -> FamilySpec:
    """The family called ``name``; ``ValueError`` listing the registered ones otherwise."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"family={name!r} is not registered; expected one of {', '.join(map(repr, list_families()))}")
    return _REGISTRY[name]


def plugin_models() -> dict[str, FamilySpec]:
    """lmms-eval model id -> its family, for every registered family."""
    return {spec.plugin.model_id: spec for spec in families()}


def family_of_plugin(model_id: str) -> FamilySpec:
    """The family whose lmms-eval plugin model is ``model_id``; ``ValueError`` listing the ids otherwise."""
    models = plugin_models()
    if model_id not in models:
        raise ValueError(f"model={model_id!r} is not a plugin model of a registered family; expected one of "
                         f"{', '.join(map(repr, sorted(models)))}")
    return models[model_id]


def family_for_model_type(model_type: str | None) -> FamilySpec | None:
    """The auto-detected family that runs checkpoints of ``model_type``, or None."""
    for spec in families():
        if spec.auto_detect and model_type in spec.model_types:
            return spec
    return None


def checkpoint_family(model: str, family: str | None = None) -> FamilySpec:
    """The family ``aot infer`` runs checkpoint ``model`` (a folder or hub id) as.

    With ``family``: that family, provided it lists the checkpoint's ``model_type`` (``ValueError``
    naming both otherwise; an unreadable ``model_type`` is not checked). Without: the auto-detected
    family of the ``model_type``, and :data:`DEFAULT_FAMILY` when none claims it or it is unreadable.
    """
    model_type = checkpoint_model_type(model)
    if family is not None:
        spec = get_family(family)
        if model_type is not None and model_type not in spec.model_types:
            raise ValueError(f"--family {family!r} runs checkpoints of model_type {list(spec.model_types)}; "
                             f"{model} has model_type {model_type!r}")
        return spec
    return family_for_model_type(model_type) or get_family(DEFAULT_FAMILY)


for _spec in (LLAVA_ONEVISION, LLAVA_VIDEO, QWEN2_5_VL, QWEN3_VL):
    register_family(_spec)
del _spec

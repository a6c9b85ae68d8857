"""Compression presets: YAML files under ``configs/compression/``, listed and resolved by name.

A preset's ``method:`` key names its method (``aot`` when absent) and picks the config class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import MethodConfig, read_yaml_mapping
from .methods import as_method, make_config
from .registry import config_classes, get_method, list_methods

_SOURCE_DIR = Path(__file__).resolve().parent.parent / "configs" / "compression"


def presets_dir() -> Path:
    """The folder holding the preset YAML files: the repository's ``configs/compression`` in a source
    checkout (the folder researchers edit), the copy shipped as ``visionzip/preset_configs`` in a wheel."""
    if _SOURCE_DIR.is_dir():
        return _SOURCE_DIR
    from importlib.resources import files

    shipped = Path(str(files("visionzip") / "preset_configs"))
    if not shipped.is_dir():
        raise FileNotFoundError(f"neither {_SOURCE_DIR} (a source checkout) nor {shipped} (an installed wheel) "
                                "exists; expected one of them: reinstall the package")
    return shipped


def _method_of(data: dict[str, Any], source: str) -> str:
    value = data.get("method", "aot")
    try:
        return as_method(value)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def config_from_yaml(path: str | Path) -> MethodConfig:
    """The config a YAML file holds, of the class its ``method:`` key names."""
    data = read_yaml_mapping(path)
    return get_method(_method_of(data, str(path))).config_class.from_dict(data, source=str(path))


def list_presets(method: Any = "aot") -> list[str]:
    """Names of the presets of ``method``, sorted: AOT's by default (as before baselines existed),
    another method's by name, every method's with ``None``."""
    names = sorted(p.stem for p in presets_dir().glob("*.yaml"))
    if method is None:
        return names
    want = as_method(method)
    return [n for n in names if _method_of(read_yaml_mapping(presets_dir() / f"{n}.yaml"), n) == want]


def get_preset(name: str) -> MethodConfig:
    """The config of a preset (any method) by name; ``ValueError`` listing the presets otherwise."""
    path = presets_dir() / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise ValueError(f"unknown compression preset {name!r}; expected one of {list_presets(None)}")
    return config_from_yaml(path)


def load_config(spec: str | Path | MethodConfig | None) -> MethodConfig | None:
    """Resolve what a user passes as ``--compression``: a preset name, a YAML path, an existing
    config of any method, ``"<method>@<retention>"`` (e.g. ``"fastvid@0.15"``, ``"aot@0.10"``: see
    :func:`make_config`), a bare method name (``"full"``), or ``None`` / ``"none"`` for no
    compression."""
    if spec is None or isinstance(spec, config_classes()):
        return spec  # type: ignore[return-value]
    text = str(spec)
    if text.lower() in ("none", "off", ""):
        return None
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return config_from_yaml(text)
    if "@" in text:
        name, _, value = text.partition("@")
        try:
            retention = float(value)
        except ValueError:
            raise ValueError(
                f"compression {text!r} is not valid; expected '<method>@<retention>' with a number, e.g. 'fastvid@0.15'"
            ) from None
        return make_config(name, retention=retention)
    if text in list_methods() and not (presets_dir() / f"{text}.yaml").is_file():
        return make_config(text)
    return get_preset(text)

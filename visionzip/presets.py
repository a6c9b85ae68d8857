"""Compression presets: YAML files under ``configs/compression/``, listed and resolved by name."""

from __future__ import annotations

from pathlib import Path

from .config import AOTConfig

_SOURCE_DIR = Path(__file__).resolve().parent.parent / "configs" / "compression"


def presets_dir() -> Path:
    """The folder holding the preset YAML files (the repository's, or the installed copy)."""
    if _SOURCE_DIR.is_dir():
        return _SOURCE_DIR
    from importlib.resources import files

    return Path(str(files("aot_configs") / "compression"))


def list_presets() -> list[str]:
    """Names of all presets, sorted."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def get_preset(name: str) -> AOTConfig:
    """The :class:`AOTConfig` of a preset by name; ``ValueError`` listing the presets otherwise."""
    path = presets_dir() / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise ValueError(f"unknown compression preset {name!r}; expected one of {list_presets()}")
    return AOTConfig.from_yaml(path)


def load_config(spec: str | Path | AOTConfig | None) -> AOTConfig | None:
    """Resolve what a user passes as ``--compression``: a preset name, a YAML path, an existing
    config, or ``None`` / ``"none"`` for no compression."""
    if spec is None or isinstance(spec, AOTConfig):
        return spec
    text = str(spec)
    if text.lower() in ("none", "off", ""):
        return None
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return AOTConfig.from_yaml(text)
    return get_preset(text)

"""Where the files the package reads at run time live: the repository's folders in a source checkout
(the ones researchers edit), the copies shipped inside the package when installed from a wheel.

=========================  ============================  ======================================
what                       in a checkout                 in an installed wheel
=========================  ============================  ======================================
lmms-eval task configs     ``lmms_eval_tasks/``          ``llava/eval/lmms_eval_tasks/``
paper table configs        ``configs/eval/``             ``llava/eval/table_configs/``
compression presets        ``configs/compression/``      ``visionzip/preset_configs/``
=========================  ============================  ======================================

``aot paths`` prints them, e.g. for ``python -m lmms_eval --include_path "$(aot paths tasks)"``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def _first(source: Path, package: str, name: str) -> Path:
    if source.is_dir():
        return source
    shipped = Path(str(files(package) / name))
    if shipped.is_dir():
        return shipped
    raise FileNotFoundError(f"neither {source} (a source checkout) nor {shipped} (an installed wheel) exists; "
                            "expected one of them: reinstall the package")


def tasks_dir() -> Path:
    """The folder of this package's lmms-eval tasks (``--include_path``)."""
    return _first(_REPO / "lmms_eval_tasks", "llava.eval", "lmms_eval_tasks")


def tables_dir() -> Path:
    """The folder of the paper-table YAML files (``configs/eval``)."""
    return _first(_REPO / "configs" / "eval", "llava.eval", "table_configs")


def presets_dir() -> Path:
    """The folder of the compression preset YAML files (``configs/compression``)."""
    from visionzip.presets import presets_dir as _presets_dir

    return _presets_dir()


def repo_root() -> Path | None:
    """The source checkout this package runs from, or None when installed from a wheel."""
    return _REPO if (_REPO / "pyproject.toml").is_file() and (_REPO / "llava").is_dir() else None

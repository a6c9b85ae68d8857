"""The release's own logged figures beside a table's cells.

The AOT authors committed their lmms-eval results files to their repository (``logs/``); the figures of
those runs (no code) are one data file of this project, ``configs/eval/aot_release_logs.json``, with their
source (repository and snapshot) and each run's date and ``model_args``. A table says in its
``reference:`` section (:class:`llava.eval.tables.Reference`) which logged run stands beside which cell:
runs of one lmms-eval model under one folder, named ``<column file>_<row tag>.json``.

:func:`reference_cells` returns, per (row, column), the logged score in the column's scale (percent) and,
for MVBench, the 20 subtasks; and the warnings a careful reader needs: logged runs of the table's model
whose benchmark the table does not have, rows or columns whose logged file is missing or holds no score.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from llava.eval.tables import Column, Table, tables_dir

__all__ = ["load_reference", "reference_cells", "reference_path"]


def reference_path(name: str = "aot_release_logs.json") -> Path:
    """The reference data file, next to the table configs."""
    return tables_dir() / name


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: expected a JSON object with 'source' and a 'runs' list")
    return data


def load_reference(name: str = "aot_release_logs.json") -> dict[str, Any]:
    """The data file: ``source``, ``note`` and ``runs`` (file, model, model_args, date, results)."""
    return _load(str(reference_path(name)))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _scaled(raw: float, column: Column) -> float:
    return 100.0 * raw if column.scale == "fraction" and raw <= 1.0 + 1e-9 else raw


def logged_score(run: dict[str, Any], column: Column, task: str) -> tuple[float | None, dict[str, float]]:
    """(score in the column's percent scale, {subtask: score}) of one logged run; a group column
    (``subtask_mean``) is the mean of the logged subtasks of ``task``."""
    results = run.get("results") or {}
    if column.aggregate == "subtask_mean":
        subtasks = {name: _number((entry or {}).get(column.metric)) for name, entry in results.items()
                    if name.startswith(task + "_")}
        subtasks = {k: _scaled(v, column) for k, v in subtasks.items() if v is not None}
        if not subtasks:
            return None, {}
        return sum(subtasks.values()) / len(subtasks), dict(sorted(subtasks.items()))
    raw = _number((results.get(task) or {}).get(column.metric))
    return (None if raw is None else _scaled(raw, column)), {}


def reference_cells(table: Table) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str], dict[str, Any]]:
    """``({(row, column): {"score", "subtasks", "file", "date", "model_args"}}, warnings, source)`` for a
    table with a ``reference:`` section (empty for one without)."""
    ref = table.reference
    if ref is None:
        return {}, [], {}
    data = load_reference(ref.source)
    runs = {r["file"]: r for r in data["runs"] if isinstance(r, dict) and r.get("file", "").startswith(ref.folder)}
    columns = {label: (prefix, task) for label, prefix, task in ref.columns}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    warnings: list[str] = []
    used: set[str] = set()
    by_name = {Path(f).name: f for f in runs}
    for row in table.rows:
        for column in table.columns:
            tag = ref.tag_for(row.label, column.label)
            if tag is None or column.label not in columns:
                continue
            prefix, task = columns[column.label]
            name = f"{prefix}_{tag}.json"
            if name not in by_name:
                warnings.append(f"reference: no logged run {name} under {ref.folder} for {row.label} / {column.label}")
                continue
            run = runs[by_name[name]]
            used.add(by_name[name])
            if run.get("model") not in (None, ref.model):
                warnings.append(f"reference: {by_name[name]} is a run of {run.get('model')!r}, not {ref.model!r}; "
                                "not shown")
                continue
            score, subtasks = logged_score(run, column, task)
            if score is None:
                warnings.append(f"reference: {by_name[name]} holds no {column.metric!r} score for {task!r} "
                                f"({row.label} / {column.label})")
                continue
            cells[(row.label, column.label)] = {"score": score, "subtasks": subtasks, "file": by_name[name],
                                                "date": run.get("date"), "model_args": run.get("model_args")}
    prefixes = {prefix: label for label, (prefix, _) in columns.items()}
    for file, run in sorted(runs.items()):
        if file in used or run.get("model") not in (None, ref.model):
            continue
        bench = Path(file).stem.rsplit("_", 1)[0]
        if bench not in prefixes and run.get("results"):
            tasks = sorted(run["results"])
            warnings.append(f"reference: {file} logs tasks {tasks[:3]}{'…' if len(tasks) > 3 else ''}, which the table "
                            "does not have; not shown")
    unmatched = sorted(f for f, r in runs.items() if f not in used and r.get("results")
                       and Path(f).stem.rsplit("_", 1)[0] in prefixes)
    source = {"file": str(reference_path(ref.source)), "source": data.get("source"), "note": data.get("note"),
              "model": ref.model, "folder": ref.folder, "unmatched": unmatched}
    return cells, warnings, source

"""Paper tables as data: ``configs/eval/<name>.yaml`` loaded into validated, frozen dataclasses.

A table is a model with its lmms-eval arguments, a list of benchmark columns (lmms-eval task and the
metric key read from its results) and a list of rows (compression settings). :mod:`llava.eval.plan`
turns a table into lmms-eval commands, :mod:`llava.eval.gather` turns the results into the table.
The model is the lmms-eval plugin model of a registered family (:mod:`llava.families`), which gives
the table the model_args key of its frame count and the lmms-eval built-in its reference runs are of.

Every error names the file, the field, the value and what was expected::

    >>> from llava.eval.tables import list_tables, load_table
    >>> list_tables()                       # one per configs/eval/*.yaml: llava_ov_7b, ..., smoke_tiny
    >>> t = load_table("llava_ov_7b")       # or a path to a YAML file
    >>> t.rows[-1].compression_for("VideoMME")
    'paper_ov_10pct_long'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llava.families import family_of_plugin

LAUNCHERS = ("accelerate", "python")
#: How a metric is stored in lmms-eval's results: ``fraction`` (0-1), ``percent`` (0-100) or ``unbounded``
#: (0 upwards with no upper bound: pycocoevalcap's raw CIDEr, as lmms-eval's VATEX task returns it);
#: ``fraction`` and ``unbounded`` are shown x 100.
SCALES = ("fraction", "percent", "unbounded")
#: ``subtask_mean``: the task is a group whose results carry no metric of its own (mvbench in
#: lmms-eval 0.7.3); its score is the unweighted mean of its subtasks' metric.
AGGREGATES = ("none", "subtask_mean")
#: Flags each planned command sets itself; ``lmms_args`` may not repeat them.
RESERVED_FLAGS = ("model", "model_args", "tasks", "batch_size", "output_path", "log_samples")

_NO_COMPRESSION = ("none", "off")


def tables_dir() -> Path:
    """The folder holding the table YAML files (the repository's, or the installed copy)."""
    from llava.resources import tables_dir as _tables_dir

    return _tables_dir()


def list_tables() -> list[str]:
    """Names of all tables, sorted."""
    return sorted(p.stem for p in tables_dir().glob("*.yaml"))


def slugify(label: str) -> str:
    """Folder name of a row or column label: ``"AOT 10 %"`` -> ``"aot_10pct"``."""
    text = re.sub(r"\s*%", "pct", label.strip().lower())
    return re.sub(r"[^a-z0-9.]+", "_", text).strip("_.")


@dataclass(frozen=True)
class ModelShape:
    """LLM sizes for the paper's prefill-FLOPs formula, and pooled visual tokens per frame (the
    retention denominator), used to estimate FLOPs for runs without an efficiency summary."""

    layers: int
    hidden: int
    ffn: int
    tokens_per_frame: int


@dataclass(frozen=True)
class Column:
    """One benchmark: ``results["results"][task][metric]`` of an lmms-eval run of ``task``."""

    label: str
    task: str
    metric: str
    scale: str
    aggregate: str = "none"
    #: the lmms-eval run this column reads, when several columns read metrics of one run (Charades-STA's
    #: R1@0.5 and mIoU); None: a run of its own, named by the column
    run: str | None = None

    @property
    def slug(self) -> str:
        return slugify(self.label)

    @property
    def run_label(self) -> str:
        """The label of the run this column reads (its own label unless it shares a ``run``)."""
        return self.run or self.label

    @property
    def run_slug(self) -> str:
        """The run's folder name under the row's: ``<output_dir>/<row_slug>/<run_slug>``."""
        return slugify(self.run_label)


@dataclass(frozen=True)
class Row:
    """One compression setting. ``compression`` is a preset name, a YAML path or ``none``;
    ``per_column`` overrides it for some columns (label -> compression)."""

    label: str
    retention: float
    compression: str
    per_column: tuple[tuple[str, str], ...] = ()
    paper: tuple[tuple[str, float], ...] = ()
    #: (column label, where its ``paper`` figure is published: paper and table); empty where the row's
    #: figures are the AOT paper's own (the QA tables)
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def slug(self) -> str:
        return slugify(self.label)

    def compression_for(self, column: str) -> str:
        """The compression this row uses for the column labelled ``column``."""
        return dict(self.per_column).get(column, self.compression)

    def paper_score(self, column: str) -> float | None:
        """The paper's number for ``column``, or None where the paper gives none."""
        return dict(self.paper).get(column)

    def paper_source(self, column: str) -> str | None:
        """Where the published figure of ``column`` comes from, or None where the row names no source."""
        return dict(self.sources).get(column)


@dataclass(frozen=True)
class Reference:
    """Where a table's cells find the release's logged runs (:mod:`llava.eval.reference`): runs of the
    lmms-eval ``model`` whose file lies under ``folder`` and is named ``<column file>_<row tag>.json``."""

    model: str
    folder: str
    columns: tuple[tuple[str, str, str], ...]  # (column label, file prefix, logged task)
    rows: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (row label, ((column label or "default", tag), ...))
    source: str = "aot_release_logs.json"

    def tag_for(self, row: str, column: str) -> str | None:
        tags = dict(dict(self.rows).get(row, ()))
        return tags.get(column, tags.get("default"))


@dataclass(frozen=True)
class Table:
    """A paper table: what to run (model, lmms-eval arguments) and how to lay out the results."""

    name: str
    title: str
    model: str
    model_args: tuple[tuple[str, Any], ...]
    launcher: str
    batch_size: int
    lmms_args: tuple[tuple[str, Any], ...]
    output_dir: str
    model_shape: ModelShape
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    source: str = ""
    reference: Reference | None = None
    #: whether a row's Avg (and the plot of it) means something: False where the columns measure
    #: different things (IoU beside caption scores)
    average: bool = True

    def column(self, label: str) -> Column:
        return _pick(self.columns, label, "column")

    def row(self, label: str) -> Row:
        return _pick(self.rows, label, "row")

    def frames(self) -> int | None:
        """The frame count of the model arguments (the family's ``PluginSpec.frames_arg``), when given."""
        value = dict(self.model_args).get(family_of_plugin(self.model).plugin.frames_arg)
        return int(value) if value is not None else None


def _pick(items, label: str, kind: str):
    for item in items:
        if label in (item.label, item.slug):
            return item
    raise ValueError(f"unknown {kind} {label!r}; expected one of {[i.label for i in items]} "
                     f"(or their slugs {[i.slug for i in items]})")


# --------------------------------------------------------------------------------------------- loading


class TableError(ValueError):
    """A table YAML that does not validate; the message names the file and the field."""


_TOP_KEYS = {"name": True, "title": True, "model": True, "model_args": True, "launcher": True, "batch_size": False,
             "lmms_args": False, "output_dir": True, "model_shape": True, "columns": True, "rows": True,
             "reference": False, "average": False}
_REFERENCE_KEYS = {"model": False, "folder": True, "columns": True, "rows": True, "source": False}
_COLUMN_KEYS = {"label": True, "task": True, "metric": True, "scale": True, "aggregate": False, "run": False}
_ROW_KEYS = {"label": True, "retention": True, "compression": True, "paper": False, "source": False}
_SHAPE_KEYS = {"layers": True, "hidden": True, "ffn": True, "tokens_per_frame": True}


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, message: str) -> TableError:
        return TableError(f"{self.source}: {field}: {message}")

    def mapping(self, value: Any, field: str, keys: dict[str, bool]) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"expected a mapping with keys {sorted(keys)}, got {value!r}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise self.fail(field, f"unknown key(s) {unknown}; expected keys among {sorted(keys)}")
        missing = sorted(k for k, required in keys.items() if required and k not in value)
        if missing:
            raise self.fail(field, f"missing key(s) {missing}")
        return value

    def free_mapping(self, value: Any, field: str) -> Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(field, f"expected a mapping name -> value, got {value!r}")
        return value

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\t\n\r"):
            raise self.fail(field, f"expected a non-empty one-line string, got {value!r}")
        return value

    def choice(self, value: Any, field: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(field, f"unknown value {value!r}; expected one of {list(choices)}")
        return value

    def positive_int(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, f"expected a positive integer, got {value!r}")
        return value

    def scalar(self, value: Any, field: str) -> Any:
        if isinstance(value, bool | int | float) and not (isinstance(value, float) and not math.isfinite(value)):
            return value
        if isinstance(value, str) and value and not any(c in value for c in ",=\t\n\r"):
            return value
        raise self.fail(field, "expected a number, a boolean or a string without ',', '=' or line breaks, "
                        f"got {value!r}")

    def unique(self, labels: list[str], field: str) -> None:
        for attr, values in (("label", labels), ("folder name (slug)", [slugify(v) for v in labels])):
            seen = [v for i, v in enumerate(values) if v in values[:i]]
            if seen:
                raise self.fail(field, f"duplicate {attr} {seen[0]!r}; every entry needs its own")
        if any(not slugify(v) for v in labels):
            raise self.fail(field, f"label without letters or digits in {labels}")


def _check_compression(ck: _Checker, value: Any, field: str) -> str:
    """A preset name, an existing YAML path (absolute or relative to the repository), or ``none``."""
    import visionzip

    if not isinstance(value, str) or not value.strip():
        raise ck.fail(field, f"expected a preset name, a YAML path or 'none', got {value!r}")
    if value.lower() in _NO_COMPRESSION:
        return value
    if "," in value or "=" in value:
        raise ck.fail(field, f"{value!r} cannot go into lmms-eval's model_args (no ',' or '=')")
    spec = value
    if value.endswith((".yaml", ".yml")) and not Path(value).is_absolute():
        from llava.resources import repo_root

        root = repo_root()
        root_relative = root / value if root is not None else Path(value)
        spec = str(root_relative) if root_relative.is_file() else value
    try:
        visionzip.load_config(spec)
    except (ValueError, TypeError) as err:
        raise ck.fail(field, f"{err} (a preset name, a YAML path or 'none')") from None
    return value


def _load_columns(ck: _Checker, value: Any) -> tuple[Column, ...]:
    if not isinstance(value, list) or not value:
        raise ck.fail("columns", f"expected a non-empty list of columns, got {value!r}")
    columns = []
    for i, entry in enumerate(value):
        f = f"columns[{i}]"
        entry = ck.mapping(entry, f, _COLUMN_KEYS)
        columns.append(Column(
            label=ck.text(entry["label"], f + ".label"),
            task=ck.text(entry["task"], f + ".task"),
            metric=ck.text(entry["metric"], f + ".metric"),
            scale=ck.choice(entry["scale"], f + ".scale", SCALES),
            aggregate=ck.choice(entry.get("aggregate", "none"), f + ".aggregate", AGGREGATES),
            run=ck.text(entry["run"], f + ".run") if "run" in entry else None,
        ))
    ck.unique([c.label for c in columns], "columns")
    tasks: dict[str, str] = {}
    for i, column in enumerate(columns):  # columns that share a run read one lmms-eval run of one task
        known = tasks.setdefault(column.run_slug, column.task)
        if known != column.task:
            raise ck.fail(f"columns[{i}].run", f"run {column.run_label!r} is a run of task {known!r}; a column "
                                               f"reading it must have that task, got {column.task!r}")
    return tuple(columns)


def _load_rows(ck: _Checker, value: Any, columns: tuple[Column, ...]) -> tuple[Row, ...]:
    if not isinstance(value, list) or not value:
        raise ck.fail("rows", f"expected a non-empty list of rows, got {value!r}")
    labels = [c.label for c in columns]
    rows = []
    for i, entry in enumerate(value):
        f = f"rows[{i}]"
        entry = ck.mapping(entry, f, _ROW_KEYS)
        label = ck.text(entry["label"], f + ".label")
        retention = entry["retention"]
        if isinstance(retention, bool) or not isinstance(retention, int | float) or not 0 < retention <= 1:
            raise ck.fail(f + ".retention",
                          f"expected the nominal retention as a fraction in (0, 1], got {retention!r}")
        compression = entry["compression"]
        per_column: dict[str, str] = {}
        if isinstance(compression, Mapping):
            unknown = sorted(k for k in compression if k != "default" and k not in labels)
            if unknown:
                raise ck.fail(f + ".compression",
                              f"unknown column label(s) {unknown}; expected 'default' or one of {labels}")
            per_column = {k: _check_compression(ck, v, f"{f}.compression.{k}")
                          for k, v in compression.items() if k != "default"}
            if "default" in compression:
                default = _check_compression(ck, compression["default"], f + ".compression.default")
            elif set(per_column) == set(labels):
                default = per_column[labels[0]]
            else:
                missing = [c for c in labels if c not in per_column]
                raise ck.fail(f + ".compression", f"no 'default' and no entry for column(s) {missing}")
        else:
            default = _check_compression(ck, compression, f + ".compression")
        paper = entry.get("paper") or {}
        if not isinstance(paper, Mapping):
            raise ck.fail(f + ".paper", f"expected a mapping column label -> score in percent, got {paper!r}")
        scales = {c.label: c.scale for c in columns}
        for key, score in paper.items():
            if key not in labels:
                raise ck.fail(f + ".paper", f"unknown column label {key!r}; expected one of {labels}")
            top = math.inf if scales[key] == "unbounded" else 100
            if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= top:
                span = "0 or more" if top == math.inf else "0-100"
                raise ck.fail(f"{f}.paper.{key}", f"expected a score in percent ({span}), got {score!r}")
        rows.append(Row(
            label=label, retention=float(retention), compression=default,
            per_column=tuple((c, per_column[c]) for c in labels if c in per_column and per_column[c] != default),
            paper=tuple((c, float(paper[c])) for c in labels if c in paper),
            sources=_load_sources(ck, entry.get("source"), f + ".source", paper, columns),
        ))
    ck.unique([r.label for r in rows], "rows")
    return tuple(rows)


def _load_sources(ck: _Checker, value: Any, field: str, paper: Mapping, columns: tuple[Column, ...]
                  ) -> tuple[tuple[str, str], ...]:
    """A row's ``source:``: where its ``paper`` figures are published. One string names the source of every
    figure of the row; a mapping names it per column label or per run (a benchmark whose columns share a
    ``run``, e.g. ``Charades-STA``: every figure of its columns). When given, every figure needs a source."""
    if value is None:
        return ()
    if not paper:
        raise ck.fail(field, "names a source but the row has no 'paper' figures; expected it beside 'paper'")
    labels = [c.label for c in columns]
    runs = {c.run for c in columns if c.run is not None}
    if isinstance(value, str):
        text = ck.text(value, field)
        found = {label: text for label in paper}
    elif isinstance(value, Mapping):
        found = {}
        for key, text in value.items():
            if key in labels:
                covered = [key]
            elif key in runs:
                covered = [c.label for c in columns if c.run == key]
            else:
                raise ck.fail(f"{field}.{key}", f"is neither a column nor a run; expected one of {labels} "
                                                f"or of the runs {sorted(runs)}")
            covered = [c for c in covered if c in paper]
            if not covered:
                raise ck.fail(f"{field}.{key}", "covers no column with a 'paper' figure; expected a source only "
                                                "for published figures")
            for label in covered:
                found[label] = ck.text(text, f"{field}.{key}")
    else:
        raise ck.fail(field, f"expected a one-line string or a mapping column or run -> string, got {value!r}")
    missing = [c for c in labels if c in paper and c not in found]
    if missing:
        raise ck.fail(field, f"no source for the 'paper' figure(s) of {missing}; every published figure names "
                             "its source")
    return tuple((c, found[c]) for c in labels if c in found)


def _load_reference(ck: _Checker, value: Any, columns: tuple[Column, ...], rows: Any,
                    builtin: str) -> Reference | None:
    """The optional ``reference:`` section: which logged run stands beside which cell. Its ``model``
    (the lmms-eval model the logged runs are of) is the table family's built-in, ``builtin``."""
    if value is None:
        return None
    data = ck.mapping(value, "reference", _REFERENCE_KEYS)
    model = ck.text(data.get("model", builtin), "reference.model")
    if model != builtin:
        raise ck.fail("reference.model", f"{model!r} is not the built-in the table's plugin model equals; "
                      f"expected {builtin!r} (or leave it out)")
    labels = [c.label for c in columns]
    cols = []
    for label, spec in ck.free_mapping(data["columns"], "reference.columns").items():
        if label not in labels:
            raise ck.fail(f"reference.columns.{label}", f"is not a column; expected one of {labels}")
        column = next(c for c in columns if c.label == label)
        if column.scale == "unbounded":
            raise ck.fail(f"reference.columns.{label}", "an 'unbounded' column has no release log; expected a "
                                                        "'fraction' or 'percent' column")
        if isinstance(spec, str):
            cols.append((label, spec, column.task))
        else:
            entry = ck.mapping(spec, f"reference.columns.{label}", {"file": True, "task": True})
            cols.append((label, ck.text(entry["file"], f"reference.columns.{label}.file"),
                         ck.text(entry["task"], f"reference.columns.{label}.task")))
    row_labels = [r.get("label") for r in rows if isinstance(r, dict)]
    out_rows = []
    for label, spec in ck.free_mapping(data["rows"], "reference.rows").items():
        if label not in row_labels:
            raise ck.fail(f"reference.rows.{label}", f"is not a row; expected one of {row_labels}")
        tags = ({"default": spec} if not isinstance(spec, dict)
                else dict(ck.free_mapping(spec, f"reference.rows.{label}")))
        for key in tags:
            if key != "default" and key not in labels:
                raise ck.fail(f"reference.rows.{label}.{key}",
                              f"is not a column; expected 'default' or one of {labels}")
        out_rows.append((label, tuple((str(k), str(v)) for k, v in tags.items())))
    return Reference(model=model, folder=ck.text(data["folder"], "reference.folder"),
                     columns=tuple(cols), rows=tuple(out_rows),
                     source=ck.text(data.get("source", "aot_release_logs.json"), "reference.source"))


def _resolve(path_or_name: str | Path) -> Path:
    text = str(path_or_name)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file() or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"table file {text!r} does not exist; expected a YAML file or one of {list_tables()}")
        return path
    path = tables_dir() / f"{text}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown table {text!r}; expected one of {list_tables()} or a path to a YAML file")
    return path


def load_table(path_or_name: str | Path) -> Table:
    """Load and validate a table by name (``configs/eval/<name>.yaml``) or path."""
    path = _resolve(path_or_name)
    ck = _Checker(str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TableError(f"{path}: not valid YAML: {err}") from None
    data = ck.mapping(data, "top level", _TOP_KEYS)
    name = ck.text(data["name"], "name")
    if name != path.stem:
        raise ck.fail("name", f"{name!r} differs from the file name; expected {path.stem!r}")
    model_args = ck.free_mapping(data["model_args"], "model_args")
    if "compression" in model_args:
        raise ck.fail("model_args.compression", "set per row (rows[*].compression), not in model_args")
    if "pretrained" not in model_args:
        raise ck.fail("model_args", "missing key ['pretrained']")
    lmms_args = ck.free_mapping(data.get("lmms_args"), "lmms_args")
    for flag in lmms_args:
        if flag in RESERVED_FLAGS:
            raise ck.fail(f"lmms_args.{flag}",
                          f"set by the plan itself; lmms_args may not contain any of {list(RESERVED_FLAGS)}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(flag)):
            raise ck.fail(f"lmms_args.{flag}", "expected an lmms-eval flag name without dashes, e.g. include_path")
    shape = ck.mapping(data["model_shape"], "model_shape", _SHAPE_KEYS)
    columns = _load_columns(ck, data["columns"])
    model = ck.text(data["model"], "model")
    try:
        family = family_of_plugin(model)
    except ValueError as exc:
        raise ck.fail("model", str(exc)) from None
    return Table(
        name=name,
        title=ck.text(data["title"], "title"),
        model=model,
        model_args=tuple((str(k), ck.scalar(v, f"model_args.{k}")) for k, v in model_args.items()),
        launcher=ck.choice(data["launcher"], "launcher", LAUNCHERS),
        batch_size=ck.positive_int(data.get("batch_size", 1), "batch_size"),
        lmms_args=tuple((str(k), ck.scalar(v, f"lmms_args.{k}")) for k, v in lmms_args.items()),
        output_dir=ck.text(data["output_dir"], "output_dir"),
        model_shape=ModelShape(**{k: ck.positive_int(shape[k], f"model_shape.{k}") for k in _SHAPE_KEYS}),
        columns=columns,
        rows=_load_rows(ck, data["rows"], columns),
        source=str(path),
        reference=_load_reference(ck, data.get("reference"), columns, data["rows"], family.plugin.builtin),
        average=_flag(ck, data.get("average", True), "average"),
    )


def _flag(ck: _Checker, value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ck.fail(field, f"{value!r} is not valid; expected true or false")
    return value

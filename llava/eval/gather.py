"""Collect the lmms-eval results of a paper table into the paper's layout: Markdown, JSON and a plot.

    python -m llava.eval.gather llava_ov_7b                       # reads runs/eval/llava_ov_7b/
    python -m llava.eval.gather smoke_tiny --runs /tmp/smoke --out t.md --json t.json --plot t.png

For each (row, column) the newest ``*_results.json`` under ``<runs>/<row_slug>/<column_slug>/``
(lmms-eval writes ``<output_path>/<model>/<date>_results.json``) gives the score
``results["results"][task][metric]`` (in percent; see :data:`llava.eval.tables.SCALES`), and the
``<date>_aot_efficiency.json`` next to it (or, when none was written, the same summary built from
the run's ``--log_samples`` files) gives the measured retention, prefill TFLOPs and failed samples; a
cell whose run had failed samples is marked ``(N failed)``. Per row: ``Avg`` over the columns (only when
all are there), ``Retention`` and ``TFLOPs`` as the mean over the columns' runs, ``Failed`` as their
sum. Where no run of a row has an efficiency summary, retention is the row's nominal value and TFLOPs
the paper's formula at that retention (shown with ``≈``). Missing runs show ``—`` and are listed;
nothing here raises on them. A row's ``paper`` figures that name a ``source`` (published figures of the
generative tables) are marked ``[n]`` in the ``↳ paper`` line, with the numbered sources listed under the
table and in the JSON's ``paper_sources`` (each with the cells it stands beside).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from llava.eval.tables import Column, Row, Table, load_table

EFFICIENCY_FORMAT = "aot-efficiency/1"
DASH = "—"
_NO_COMPRESSION = ("none", "off")


# ------------------------------------------------------------------------------------------- reading


def newest_results(run_dir: Path) -> Path | None:
    """The newest ``*_results.json`` below ``run_dir`` (lmms-eval's ``<date>_`` prefix sorts by time),
    outside hidden folders (``.superseded``, the response cache)."""
    from llava.eval.manifest import results_files

    found = [p for p in results_files(run_dir) if p.is_file()]
    return max(found, key=lambda p: (p.name, p.stat().st_mtime)) if found else None


def _expected_manifests(table: Table, runs: Path) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Per (row, column), the manifest its run must carry (None when the row cannot be planned)."""
    from llava.eval.manifest import manifest_of_command
    from llava.eval.plan import plan_commands

    out: dict[tuple[str, str], dict[str, Any] | None] = {}
    for run in plan_commands(table, output_dir=runs):
        try:
            manifest = manifest_of_command(run.argv)
        except ValueError:
            manifest = None
        for column in run.columns or (run.column,):
            out[(run.row, column)] = manifest
    return out


def _check_run(cell: dict[str, Any], results_path: Path, expected: dict[str, Any] | None, run_dir: Path
               ) -> tuple[str | None, str | None]:
    """``(why the cell is refused, a warning)`` for the run in ``run_dir`` against its row's manifest."""
    from llava.eval import manifest as mf

    current = mf.read_manifest(run_dir)
    cell["manifest"] = current
    if current is None:
        return None, ("no manifest (a run not launched by the table runner): its settings are not checked against "
                      "the row")
    if expected is not None and current != expected:
        changed = mf.diff(current, expected)
        return "its settings are not the row's: " + "; ".join(changed[:4]) + (" …" if len(changed) > 4 else ""), None
    others = [p for p in mf.results_files(run_dir) if p != results_path]
    if others:
        return f"{len(others) + 1} results files in one run folder; expected one run per folder", None
    return mf.check_results(results_path, current.get("task"), current.get("limit")), None


def efficiency_path(results_path: Path) -> Path:
    """``<date>_aot_efficiency.json`` next to ``<date>_results.json``."""
    return results_path.with_name(results_path.name[: -len("_results.json")] + "_aot_efficiency.json")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_score(results: dict, column: Column) -> tuple[float | None, str | None]:
    """(score in percent, None) or (None, why not) for ``column`` in an lmms-eval results dict."""
    table = results.get("results")
    if not isinstance(table, dict) or column.task not in table:
        have = sorted(table) if isinstance(table, dict) else []
        return None, f"task {column.task!r} not in results; it has {have}"
    entry = table[column.task]
    raw = _number(entry.get(column.metric)) if isinstance(entry, dict) else None
    if raw is None and column.aggregate == "subtask_mean":
        subtasks = (results.get("group_subtasks") or {}).get(column.task) or []
        values = [_number((table.get(t) or {}).get(column.metric)) for t in subtasks]
        if not subtasks or any(v is None for v in values):
            missing = [t for t, v in zip(subtasks, values) if v is None]
            return None, f"group {column.task!r}: no {column.metric!r} for subtasks {missing or '(none listed)'}"
        raw = sum(values) / len(values)
    if raw is None:
        keys = sorted(k for k in entry if k != "alias") if isinstance(entry, dict) else []
        return None, f"no numeric {column.metric!r} in results[{column.task!r}]; it has {keys}"
    if column.scale == "fraction":
        if raw > 1.0 + 1e-9:
            return raw, f"{column.metric!r} = {raw} is above 1 but the column's scale is 'fraction'; shown as is"
        return 100.0 * raw, None
    if column.scale == "unbounded":
        return 100.0 * raw, None
    return raw, None


def read_subtasks(results: dict, column: Column) -> dict[str, float]:
    """{subtask: score in percent} of a group column (MVBench's 20 tasks), as lmms-eval lists them."""
    table = results.get("results") or {}
    names = ((results.get("group_subtasks") or {}).get(column.task)
             or [t for t in table if t.startswith(column.task + "_")])
    out = {}
    for name in sorted(names):
        raw = _number((table.get(name) or {}).get(column.metric))
        if raw is not None:
            scaled = column.scale == "unbounded" or (column.scale == "fraction" and raw <= 1.0 + 1e-9)
            out[name] = 100.0 * raw if scaled else raw
    return out


def read_efficiency(results_path: Path, column: Column) -> tuple[dict | None, str | None]:
    """The run's efficiency stats (the summary's ``overall``: one run is one column), or a reason."""
    path = efficiency_path(results_path)
    if not path.is_file():
        # no summary written (a run launched by hand): build it from the run's --log_samples files
        from llava.eval.efficiency import build_run_summary

        try:
            data = build_run_summary(results_path)
        except (OSError, ValueError):
            return None, None
        if data.get("source") != "samples":
            return None, None
    else:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return None, f"{path}: unreadable ({err})"
    if not isinstance(data, dict) or data.get("format") != EFFICIENCY_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        return None, f"{path}: format {found!r}, expected {EFFICIENCY_FORMAT!r}"
    stats = data.get("overall")
    if not isinstance(stats, dict):
        stats = (data.get("tasks") or {}).get(column.task)
    if not isinstance(stats, dict):
        return None, f"{path}: no 'overall' and no task {column.task!r}"
    note = None
    if data.get("results_file") not in (None, results_path.name):
        note = f"{path}: written for {data['results_file']!r}, not {results_path.name!r}"
    return stats, note


# ------------------------------------------------------------------------------------------ gathering


def _is_full(row: Row) -> bool:
    return row.compression.lower() in _NO_COMPRESSION and not row.per_column


def _estimated_tflops(table: Table, retention: float) -> float | None:
    from visionzip.flops import prefill_flops

    frames = table.frames()
    if frames is None:
        return None
    shape = table.model_shape
    tokens = round(retention * frames * shape.tokens_per_frame)
    return prefill_flops(tokens, layers=shape.layers, hidden=shape.hidden, ffn=shape.ffn) / 1e12


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cell(table: Table, row: Row, column: Column, runs: Path, problems: list[str],
          expected: dict[str, Any] | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    run_dir = runs / row.slug / column.run_slug
    cell: dict[str, Any] = {"run_dir": str(run_dir), "compression": row.compression_for(column.label),
                            "results_file": None, "score": None, "manifest": None}
    results_path = newest_results(run_dir)
    if results_path is None:
        return cell
    cell["results_file"] = str(results_path)
    refused, warning = _check_run(cell, results_path, expected, run_dir)
    if warning and warnings is not None:
        warnings.append(f"{row.label} / {column.label}: {warning}")
    if refused:
        cell["refused"] = refused
        problems.append(f"{row.label} / {column.label}: {results_path} is not shown: {refused}")
        return cell
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{row.label} / {column.label}: {results_path}: unreadable ({err})")
        return cell
    results = results if isinstance(results, dict) else {}
    score, why = read_score(results, column)
    cell["score"] = score
    if why:
        problems.append(f"{row.label} / {column.label}: {results_path}: {why}")
    model = (results.get("config") or {}).get("model")
    cell["model"] = model
    if model not in (None, table.model):
        problems.append(f"{row.label} / {column.label}: {results_path} is a run of model {model!r}, not the table's "
                        f"{table.model!r}: no delta is shown for it")
    if column.aggregate == "subtask_mean":
        cell["subtasks"] = read_subtasks(results, column)
    stats, note = read_efficiency(results_path, column)
    if note:
        problems.append(f"{row.label} / {column.label}: {note}")
    if stats is not None:
        cell["efficiency_file"] = str(efficiency_path(results_path))
        for key in ("samples", "failed"):
            cell[key] = stats.get(key) if isinstance(stats.get(key), int) else None
        for key in ("retention_mean", "retention_min", "retention_max", "retention_std", "prefill_tflops_mean",
                    "visual_tokens_mean", "visual_tokens_plain_mean", "frames_mean", "ttft_ms_mean", "vision_ms_mean",
                    "compression_ms_mean", "peak_memory_mb_max"):
            cell[key] = _number(stats.get(key))
        if cell["prefill_tflops_mean"] is None and cell["visual_tokens_mean"] is not None:
            from visionzip.flops import prefill_flops

            shape = table.model_shape
            cell["prefill_tflops_mean"] = prefill_flops(
                round(cell["visual_tokens_mean"]), layers=shape.layers, hidden=shape.hidden, ffn=shape.ffn) / 1e12
    return cell


def gather(table: Table | str, runs: str | Path | None = None) -> dict[str, Any]:
    """The table's data: per row its cells, Avg, retention, TFLOPs, failed samples and the paper's
    numbers; plus the missing runs and the problems met (unreadable files, absent metrics)."""
    if not isinstance(table, Table):
        table = load_table(table)
    from llava.eval.reference import reference_cells

    runs = Path(runs if runs is not None else table.output_dir)
    problems: list[str] = []
    missing: list[str] = []
    release_cells, warnings, release_source = reference_cells(table)
    warnings = list(warnings)
    expected = _expected_manifests(table, runs)
    rows = []
    for row in table.rows:
        cells = {c.label: _cell(table, row, c, runs, problems, expected.get((row.label, c.label)), warnings)
                 for c in table.columns}
        for c in table.columns:
            ref = release_cells.get((row.label, c.label))
            cell = cells[c.label]
            cell["release"] = None if ref is None else {k: ref[k] for k in ("score", "file", "date")}
            comparable = ref is not None and cell["score"] is not None and cell.get("model") in (None, table.model)
            cell["delta_vs_release"] = cell["score"] - ref["score"] if comparable else None
            if ref is not None and ref["subtasks"]:
                ours = cell.get("subtasks") or {}
                same_model = cell.get("model") in (None, table.model)
                cell["subtask_table"] = [
                    {"subtask": name, "ours": ours.get(name), "release": value,
                     "delta": (ours[name] - value) if name in ours and same_model else None}
                    for name, value in ref["subtasks"].items()
                ]
        for c in table.columns:
            if cells[c.label]["results_file"] is None:
                missing.append(f"{row.label} / {c.label}: no *_results.json under {cells[c.label]['run_dir']}")
            elif cells[c.label].get("refused"):
                missing.append(f"{row.label} / {c.label}: not finished as the row describes it "
                               f"({cells[c.label]['refused']})")
        scores = [cells[c.label]["score"] for c in table.columns]
        retention = _mean([x["retention_mean"] for x in cells.values() if x.get("retention_mean") is not None])
        tflops = _mean([x["prefill_tflops_mean"] for x in cells.values() if x.get("prefill_tflops_mean") is not None])
        failed = [x["failed"] for x in cells.values() if x.get("failed") is not None]
        paper = {c.label: row.paper_score(c.label) for c in table.columns if row.paper_score(c.label) is not None}
        sources = {c.label: row.paper_source(c.label) for c in table.columns if row.paper_source(c.label)}
        release = {c.label: cells[c.label]["release"]["score"] for c in table.columns if cells[c.label]["release"]}
        avg = _mean(scores) if table.average and all(s is not None for s in scores) else None
        paper_avg = _mean(list(paper.values())) if table.average and len(paper) == len(table.columns) else None
        rows.append({
            "label": row.label,
            "slug": row.slug,
            "full_tokens": _is_full(row),
            "retention_nominal": row.retention,
            "cells": cells,
            "avg": avg,
            "retention": retention if retention is not None else row.retention,
            "retention_source": "measured" if retention is not None else "nominal",
            "tflops": tflops if tflops is not None else _estimated_tflops(table, row.retention),
            "tflops_source": "measured" if tflops is not None else "estimated",
            "failed": sum(failed) if failed else None,
            "paper": paper or None,
            "paper_sources": sources or None,
            "paper_avg": paper_avg,
            "delta_vs_paper": {k: cells[k]["score"] - v for k, v in paper.items()
                               if cells[k]["score"] is not None} or None,
            "release": release or None,
            "delta_vs_release": {k: cells[k]["delta_vs_release"] for k in release
                                 if cells[k]["delta_vs_release"] is not None} or None,
        })
    return {"table": table.name, "title": table.title, "source": table.source, "runs": str(runs),
            "average": table.average,
            "columns": [{"label": c.label, "task": c.task, "metric": c.metric, "scale": c.scale}
                        for c in table.columns],
            "rows": rows, "missing": missing, "problems": problems, "warnings": warnings,
            "reference": release_source or None, "paper_sources": _numbered_sources(rows)}


def _numbered_sources(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct sources of the rows' published figures, numbered in order of first use (rows, then
    columns), each with the (row, column) cells it stands beside: ``[{"id": 1, "text": ..., "cells": ...}]``."""
    out: list[dict[str, Any]] = []
    for row in rows:
        for label, text in (row["paper_sources"] or {}).items():
            entry = next((e for e in out if e["text"] == text), None)
            if entry is None:
                entry = {"id": len(out) + 1, "text": text, "cells": []}
                out.append(entry)
            entry["cells"].append([row["label"], label])
    return out


# ------------------------------------------------------------------------------------------- rendering


def _fmt_score(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


#: a subtask whose score differs from the release's by more than this (points) is flagged
SUBTASK_FLAG_POINTS = 2.0


def _fmt_cell(cell: dict[str, Any]) -> str:
    """A run's score with its measured retention, marked with its failed samples when it has any:
    ``56.1 @ 10.2 % (3 failed)``."""
    text = _fmt_score(cell["score"])
    if cell["score"] is not None and cell.get("retention_mean") is not None:
        text += f" @ {100 * cell['retention_mean']:.1f} %"
    return f"{text} ({cell['failed']} failed)" if cell.get("failed") else text


def _fmt_delta(value: float | None) -> str:
    if value is None:
        return DASH
    return "0.0" if round(value, 1) == 0 else f"{value:+.1f}"


def _fmt_tflops(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_markdown(data: dict[str, Any]) -> str:
    """The table in the paper's layout, with the paper's numbers and the gap beneath their rows."""
    labels = [c["label"] for c in data["columns"]]
    number = {e["text"]: e["id"] for e in data.get("paper_sources") or []}
    average = data.get("average", True)
    head = ["Method", *labels, *(["Avg"] if average else []), "Retention", "TFLOPs", "Failed"]
    avg_cells = (lambda value: [value]) if average else (lambda value: [])
    lines = [f"### {data['title']}", "", "| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    estimated = marked = False
    for row in data["rows"]:
        retention = f"{100 * row['retention']:.1f} %"
        tflops = _fmt_tflops(row["tflops"])
        if row["retention_source"] == "nominal":
            retention, estimated = f"≈{100 * row['retention']:.0f} %", True
        if row["tflops_source"] == "estimated" and row["tflops"] is not None:
            tflops, estimated = f"≈{tflops}", True
        failed = DASH if row["failed"] is None else str(row["failed"])
        cells = [_fmt_cell(row["cells"][k]) for k in labels]
        marked = marked or any(row["cells"][k].get("failed") for k in labels)
        lines.append("| " + " | ".join([row["label"], *cells, *avg_cells(_fmt_score(row["avg"])), retention, tflops,
                                        failed]) + " |")
        if row["paper"]:
            marks = {k: f" [{number[text]}]" for k, text in (row.get("paper_sources") or {}).items()}
            paper = [_fmt_score(row["paper"].get(k)) + (marks.get(k, "") if k in row["paper"] else "")
                     for k in labels]
            lines.append("| ↳ paper | " + " | ".join([*paper, *avg_cells(_fmt_score(row["paper_avg"])), "", "", ""])
                         + " |")
        if row["delta_vs_paper"]:
            delta = row["delta_vs_paper"]
            both = row["avg"] is not None and row["paper_avg"] is not None
            avg_delta = row["avg"] - row["paper_avg"] if both else None
            lines.append("| ↳ Δ vs paper | " + " | ".join([*(_fmt_delta(delta.get(k)) for k in labels),
                                                           *avg_cells(_fmt_delta(avg_delta)), "", "", ""]) + " |")
        if row.get("release"):
            release = [_fmt_score(row["release"].get(k)) for k in labels]
            lines.append("| ↳ release log | " + " | ".join([*release, *avg_cells(""), "", "", ""]) + " |")
        if row.get("delta_vs_release"):
            delta = row["delta_vs_release"]
            deltas = [_fmt_delta(delta.get(k)) for k in labels]
            lines.append("| ↳ Δ vs release | " + " | ".join([*deltas, *avg_cells(""), "", "", ""]) + " |")
    lines.append("")
    avg_note = ("Avg only when every benchmark has a result" if average
                else "no Avg: the columns measure different things (average: false)")
    notes = [f"Scores in %; {avg_note}. Retention: visual tokens into the LLM "
             "(newlines excluded) over frames × pooled tokens per frame; TFLOPs: prefill over the visual "
             "tokens (the paper's formula); both the mean over the row's runs. Failed: samples that failed."]
    if marked:
        notes.append("(N failed): N samples of that run failed (missing or corrupt video, an exception in the "
                     "forward pass); each is scored as a wrong answer, and its doc ids are in the run's "
                     "<date>_aot_efficiency.json.")
    if estimated:
        notes.append("≈: no efficiency summary for the row; retention is nominal and TFLOPs computed from it.")
    notes.append("A cell's @ figure is the retention its run measured (mean over its samples).")
    if number:
        notes.append("↳ paper: published figures, each marked [n] with its source below; their settings (frames, "
                     "resolution, prompt, harness) are their authors', not this table's.")
    ref = data.get("reference")
    if ref:
        notes.append(f"↳ paper: the paper's numbers. ↳ release log: the authors' own lmms-eval results "
                     f"({ref['source']}: {ref['model']} runs under {ref['folder']}; figures in "
                     f"configs/eval/{Path(ref['file']).name}, each run's date and model_args in table.json); "
                     "Δ: ours minus theirs.")
        if ref.get("unmatched"):
            notes.append("Logged runs matched to no row: " + ", ".join(Path(f).name for f in ref["unmatched"]) + ".")
    lines += notes
    if number:
        lines += ["", "Sources of the ↳ paper figures:", ""]
        lines += [f"- [{e['id']}] {e['text']}" for e in data["paper_sources"]]
    lines += _subtask_tables(data)
    return "\n".join(lines) + "\n"


def _subtask_tables(data: dict[str, Any]) -> list[str]:
    """One table per row with a release log of a group column (MVBench): ours, theirs, Δ, and ⚠ where
    the gap exceeds :data:`SUBTASK_FLAG_POINTS` (where a first GPU run is debugged)."""
    out: list[str] = []
    for row in data["rows"]:
        for label, cell in row["cells"].items():
            entries = cell.get("subtask_table")
            if not entries:
                continue
            flagged = [e for e in entries if e["delta"] is not None and abs(e["delta"]) > SUBTASK_FLAG_POINTS]
            out += ["", f"#### {label} per subtask: {row['label']} (⚠: |Δ| > {SUBTASK_FLAG_POINTS:g} points; "
                    f"{len(flagged)} flagged)", "", "| subtask | ours | release log | Δ | |",
                    "|---|---:|---:|---:|---|"]
            for e in entries:
                flag = "⚠" if e in flagged else ""
                out.append(f"| {e['subtask']} | {_fmt_score(e['ours'])} | {_fmt_score(e['release'])} "
                           f"| {_fmt_delta(e['delta'])} | {flag} |")
    return out


def render_plot(data: dict[str, Any], path: str | Path) -> Path:
    """Two panels: average accuracy vs retention and vs prefill TFLOPs, the full-token row as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("retention", "retention (%)", 100.0), ("tflops", "prefill TFLOPs", 1.0))
    rows = [r for r in data["rows"] if r["avg"] is not None]
    full = next((r for r in data["rows"] if r["full_tokens"]), None)
    for ax, (key, xlabel, factor) in zip(axes, panels):
        points = [(r[key] * factor, r["avg"], r["label"]) for r in rows if r[key] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="C0", label="measured")
            for x, y, label in points:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        paper = [(r[key] * factor, r["paper_avg"]) for r in data["rows"]
                 if r["paper_avg"] is not None and r[key] is not None]
        if paper:
            ax.plot([p[0] for p in paper], [p[1] for p in paper], "s", mfc="none", color="C3", label="paper")
        if full is not None and full["avg"] is not None:
            ax.axhline(full["avg"], color="gray", ls="--", lw=1, label=f"{full['label']} ({full['avg']:.1f})")
        if not points and not paper:
            ax.text(0.5, 0.5, "no complete row yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("average accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(data["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.gather", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="table name (configs/eval/<name>.yaml) or path to a table YAML")
    parser.add_argument("--runs", help="results folder (default: the table's output_dir)")
    parser.add_argument("--out", help="Markdown file (default: <runs>/table.md)")
    parser.add_argument("--json", help="JSON file (default: <runs>/table.json)")
    parser.add_argument("--plot", help="PNG file (default: <runs>/table.png)")
    args = parser.parse_args(argv)
    try:
        table = load_table(args.table)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = Path(args.runs or table.output_dir)
    data = gather(table, runs)
    markdown = render_markdown(data)
    out = Path(args.out or runs / "table.md")
    out_json = Path(args.json or runs / "table.json")
    out_plot = Path(args.plot or runs / "table.png")
    for path in (out, out_json):
        path.parent.mkdir(parents=True, exist_ok=True)
    from llava.eval.manifest import write_json_atomic, write_text_atomic

    write_text_atomic(markdown, out)
    write_json_atomic(data, out_json)
    if table.average:
        render_plot(data, out_plot)
    print(markdown)
    if not table.average:
        print("No plot: the table has no Avg to plot (average: false).")
    if data["missing"]:
        print(f"Missing runs ({len(data['missing'])}):")
        print("\n".join(f"  {m}" for m in data["missing"]))
    if data["problems"]:
        print(f"Problems ({len(data['problems'])}):")
        print("\n".join(f"  {p}" for p in data["problems"]))
    if data["warnings"]:
        print(f"Warnings ({len(data['warnings'])}):")
        print("\n".join(f"  {w}" for w in data["warnings"]))
    print(f"wrote {out}, {out_json}, {out_plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

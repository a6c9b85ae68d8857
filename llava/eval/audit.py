"""Retention audit: did a "15 %" row really run at 15 %?

    python -m llava.eval.audit llava_ov_7b                    # reads runs/eval/llava_ov_7b/
    python -m llava.eval.audit smoke_tiny --runs runs/smoke   # the smoke evaluation's outputs
    python -m llava.eval.audit llava_video_7b --tolerance 0.02 --json audit.json

Per row and benchmark of a table, from each run's efficiency summary (``<date>_aot_efficiency.json``, or
the same summary built from the run's ``--log_samples`` files): the samples, the measured retention (mean,
min, max and standard deviation over the samples; retention as the paper counts it, newlines excluded)
against the row's label, and a flag where the mean is more than ``--tolerance`` (default 0.01: one point)
off the label. A run of another model than the table's is named and not audited. It reports; it does not
grade itself (exit status 0 whatever it finds, 2 for a table it cannot read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llava.eval.gather import gather
from llava.eval.tables import load_table

DEFAULT_TOLERANCE = 0.01


def _spread_from_samples(results_file: str, task: str) -> dict[str, Any]:
    """Retention spread of a run whose written summary predates the spread fields."""
    from llava.eval.efficiency import build_run_summary

    try:
        summary = build_run_summary(results_file)
    except (OSError, ValueError):
        return {}
    stats = (summary.get("tasks") or {}).get(task) or summary.get("overall") or {}
    return {k: stats.get(k) for k in ("retention_min", "retention_max", "retention_std") if stats.get(k) is not None}


def audit(table_name: str, runs: str | Path | None = None, *, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    table = load_table(table_name)
    data = gather(table, runs)
    entries = []
    for row, spec in zip(data["rows"], table.rows):
        for column in table.columns:
            cell = row["cells"][column.label]
            entry: dict[str, Any] = {"row": row["label"], "label": spec.retention, "benchmark": column.label,
                                     "compression": cell["compression"], "results_file": cell["results_file"],
                                     "samples": cell.get("samples"), "failed": cell.get("failed")}
            if cell["results_file"] is None:
                entry["status"] = "no run"
            elif cell.get("model") not in (None, table.model):
                entry["status"] = f"run of model {cell['model']!r}, not {table.model!r}: not audited"
            elif cell.get("retention_mean") is None:
                entry["status"] = "no per-sample accounting"
            else:
                spread = {k: cell.get(k) for k in ("retention_min", "retention_max", "retention_std")}
                if any(v is None for v in spread.values()):
                    spread.update(_spread_from_samples(cell["results_file"], column.task))
                mean = cell["retention_mean"]
                entry.update(mean=mean, **spread, delta=mean - spec.retention)
                entry["flag"] = abs(mean - spec.retention) > tolerance
                entry["status"] = "off its label" if entry["flag"] else "ok"
            entries.append(entry)
    return {"table": table.name, "title": table.title, "runs": data["runs"], "tolerance": tolerance, "entries": entries,
            "flagged": [f"{e['row']} / {e['benchmark']}" for e in entries if e.get("flag")]}


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def render(report: dict[str, Any]) -> str:
    head = "| row | label | benchmark | samples | mean | min | max | std | Δ | |"
    lines = [f"### Retention audit: {report['title']}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for e in report["entries"]:
        delta = "—" if e.get("delta") is None else f"{100 * e['delta']:+.1f}"
        mark = "⚠ off its label" if e.get("flag") else ("" if e["status"] == "ok" else e["status"])
        failed = f" ({e['failed']} failed)" if e.get("failed") else ""
        samples = "—" if e.get("samples") is None else f"{e['samples']}{failed}"
        lines.append(f"| {e['row']} | {_pct(e['label'], 0)} | {e['benchmark']} | {samples} | {_pct(e.get('mean'))} "
                     f"| {_pct(e.get('retention_min'))} | {_pct(e.get('retention_max'))} "
                     f"| {_pct(e.get('retention_std'), 2)} | {delta} | {mark} |")
    lines += ["", f"Retention: visual tokens into the LLM (newlines excluded) over frames × pooled tokens per frame, "
                  "over the samples that did not fail. ⚠: the mean is more than "
                  f"{100 * report['tolerance']:.0f} point(s) off the row's label. {len(report['flagged'])} flagged."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="table name (configs/eval/<name>.yaml) or path to a table YAML")
    parser.add_argument("--runs", help="results folder (default: the table's output_dir)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"flag a mean this far off the label (default {DEFAULT_TOLERANCE}: one point)")
    parser.add_argument("--json", help="also write the audit here")
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        print(f"error: --tolerance {args.tolerance}: expected a retention difference in [0, 1)", file=sys.stderr)
        return 2
    try:
        report = audit(args.table, args.runs, tolerance=args.tolerance)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

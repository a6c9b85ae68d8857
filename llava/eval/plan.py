"""Turn a paper table (``configs/eval/<name>.yaml``) into lmms-eval commands, one per (row, column).

    python -m llava.eval.plan llava_ov_7b                                   # 20 commands, one per line
    python -m llava.eval.plan llava_ov_7b --rows "Full tokens,AOT 10 %" --columns MVBench
    PYTHON=.venv/bin/python NUM_GPUS=8 python -m llava.eval.plan llava_ov_7b --expand   # variables filled in
    python -m llava.eval.plan smoke_tiny --output_dir /tmp/smoke --format tsv --expand  # what scripts/eval/ reads

Each run writes to ``<output_dir>/<row_slug>/<column_slug>`` (lmms-eval adds
``<model>/<date>_results.json`` below it). The commands run ``python -m llava.eval.lmms``, lmms-eval's
command line with a response cache that resumes per sample; :mod:`llava.eval.runner` adds each run's
``--use_cache`` folder. The commands keep three shell variables for the launching
script to set: ``$PYTHON`` (the interpreter), ``$NUM_GPUS`` and ``${MAIN_PORT:-29500}`` (accelerate);
``--expand`` fills them in from the environment instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from llava.eval.tables import Table, load_table

#: Shell expansions left in the commands; ``Run.shell()`` writes them double-quoted, unescaped.
SHELL_VARS = {"$PYTHON": "PYTHON", "$NUM_GPUS": "NUM_GPUS", "${MAIN_PORT:-29500}": "MAIN_PORT"}
_VAR_DEFAULTS = {"MAIN_PORT": "29500"}


@dataclass(frozen=True)
class Run:
    """One lmms-eval run: a table row on one benchmark column."""

    row: str
    column: str
    compression: str
    output_path: str
    argv: tuple[str, ...]
    #: the labels of the columns that read this run (more than ``column`` where columns share a ``run``)
    columns: tuple[str, ...] = ()

    def shell(self) -> str:
        """The command as one shell line: arguments quoted, the launcher's variables left to expand."""
        return " ".join(f'"{a}"' if a in SHELL_VARS else shlex.quote(a) for a in self.argv)

    def expand(self, env: Mapping[str, str]) -> list[str]:
        """``argv`` with the shell variables replaced from ``env`` (e.g. ``{"PYTHON": sys.executable}``)."""
        out = []
        for arg in self.argv:
            if arg in SHELL_VARS:
                name = SHELL_VARS[arg]
                value = env.get(name) or _VAR_DEFAULTS.get(name)
                if not value:
                    raise ValueError(f"{name} is not set; the command of {self.row} / {self.column} needs it "
                                     f"(expected the environment to define {sorted(set(SHELL_VARS.values()))})")
                arg = str(value)
            out.append(arg)
        return out


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def model_args_string(table: Table, compression: str) -> str:
    """``k=v,...`` in the YAML's order, then ``compression=<compression>``."""
    return ",".join(f"{k}={_format_value(v)}" for k, v in (*table.model_args, ("compression", compression)))


def _select(items, wanted: Iterable[str] | None, pick) -> list:
    if wanted is None:
        return list(items)
    chosen = [pick(label) for label in wanted]
    return [item for item in items if item in chosen]


def _split(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def plan_commands(table: Table | str, rows: Iterable[str] | None = None, columns: Iterable[str] | None = None,
                  output_dir: str | Path | None = None) -> list[Run]:
    """The runs of ``table`` (a :class:`Table`, a name or a path), rows outer, columns inner, in the
    YAML's order; ``rows``/``columns`` select by label or slug, ``output_dir`` replaces the table's."""
    if not isinstance(table, Table):
        table = load_table(table)
    base = str(output_dir) if output_dir is not None else table.output_dir
    if table.launcher == "accelerate":
        launch = ["$PYTHON", "-m", "accelerate.commands.launch", "--num_processes", "$NUM_GPUS",
                  "--main_process_port", "${MAIN_PORT:-29500}", "-m", "llava.eval.lmms"]
    else:
        launch = ["$PYTHON", "-m", "llava.eval.lmms"]
    extra: list[str] = []
    for flag, value in table.lmms_args:
        if value is False:
            continue
        extra += [f"--{flag}"] if value is True else [f"--{flag}", _format_value(value)]
    runs = []
    for row in _select(table.rows, rows, table.row):
        planned: dict[str, int] = {}  # run slug -> index in runs: columns sharing a run add their labels to it
        for column in _select(table.columns, columns, table.column):
            compression = row.compression_for(column.label)
            if column.run_slug in planned:
                shared = runs[planned[column.run_slug]]
                if shared.compression != compression:
                    raise ValueError(f"{table.name}: row {row.label!r}: columns {shared.columns[0]!r} and "
                                     f"{column.label!r} share run {column.run_label!r} but have compressions "
                                     f"{shared.compression!r} and {compression!r}; expected one per run")
                runs[planned[column.run_slug]] = replace(shared, columns=(*shared.columns, column.label))
                continue
            output_path = f"{base.rstrip('/')}/{row.slug}/{column.run_slug}"
            argv = (*launch, "--model", table.model, "--model_args", model_args_string(table, compression),
                    "--tasks", column.task, "--batch_size", str(table.batch_size), *extra,
                    "--output_path", output_path, "--log_samples")
            planned[column.run_slug] = len(runs)
            runs.append(Run(row=row.label, column=column.run_label, compression=compression,
                            output_path=output_path, argv=tuple(argv), columns=(column.label,)))
    return runs


def check_tasks(table: Table | str, runs: list[Run]) -> None:
    """``ValueError`` naming any task of ``runs`` that lmms-eval does not know (with the table's
    ``include_path``), before any model loads."""
    from llava.eval.task_names import task_manager

    if not isinstance(table, Table):
        table = load_table(table)
    include = [str(v) for flag, v in table.lmms_args if flag == "include_path"]
    tasks = [arg for run in runs for flag, arg in zip(run.argv, run.argv[1:]) if flag == "--tasks"]
    try:
        task_manager([t for item in tasks for t in item.split(",")], include)
    except ValueError as err:
        raise ValueError(f"{table.name}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="table name (configs/eval/<name>.yaml) or path to a table YAML")
    parser.add_argument("--rows", help="comma-separated row labels or slugs (default: all)")
    parser.add_argument("--columns", help="comma-separated column labels or slugs (default: all)")
    parser.add_argument("--output_dir", help="replace the table's output_dir")
    parser.add_argument("--expand", action="store_true",
                        help="fill in $PYTHON, $NUM_GPUS, $MAIN_PORT (default 29500) from the environment")
    parser.add_argument("--check-tasks", action="store_true",
                        help="first check that lmms-eval knows every planned task (seconds; before any model loads)")
    parser.add_argument("--format", choices=("shell", "tsv"), default="shell",
                        help="shell: one command per line; tsv: row, column, output path, command (tab-separated)")
    args = parser.parse_args(argv)
    try:
        runs = plan_commands(args.table, _split(args.rows), _split(args.columns), args.output_dir)
        if args.check_tasks:
            check_tasks(args.table, runs)
        commands = [shlex.join(run.expand(os.environ)) if args.expand else run.shell() for run in runs]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for run, command in zip(runs, commands):
        print("\t".join((run.row, run.column, run.output_path, command)) if args.format == "tsv" else command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every lmms-eval command of one paper table, each cell the run its row describes.

    python -m llava.eval.runner smoke_tiny                       # what scripts/eval/_run_table.sh runs
    python -m llava.eval.runner llava_ov_7b --rows "Full tokens,AOT 10 %" --columns MVBench --dry-run

For each (row, column) of the plan (:mod:`llava.eval.plan`) the runner builds the run's manifest
(:mod:`llava.eval.manifest`: the model arguments with the compression resolved to its content, the
checkpoint, task, limit, frames, lmms-eval arguments, versions). Before any model loads it checks,
for every planned run, the task names, the compression (an empty or unknown one is an error) and the
frame count, and that the output folder is writable with room; and it takes the table's output folder
for itself (a second runner on it is refused, naming the first). Then, per run:

* a run whose folder holds the finished run of the same manifest is skipped (``finished, skipped``);
* a folder holding anything else (other settings, a truncated results file, a partial run) is moved to
  ``<run>/.superseded/<time>/`` with the reason, which is printed, and the run starts afresh;
* the run goes through ``python -m llava.eval.lmms`` (lmms-eval's command line) with
  ``--use_cache <run>/.cache/<key>``: its answers are stored a batch at a time, so a run that was
  killed (``kill -9`` included) re-launched with the same command answers only what is left; a failed
  sample is never cached and is tried again. The console output is kept in ``<run>/lmms_eval.log``;
* the run counts as finished only when :func:`llava.eval.manifest.check_finished` says so (results
  that parse and count every sample the run should have); its efficiency summary is then written.

SIGINT and SIGTERM are passed on to the running evaluation (its whole process group); the runner waits
for it, prints the table so far and exits ``128 + signal``. At the end the table is gathered
(:mod:`llava.eval.gather`), a line counts what ran, and every failed run is listed with the first error
line of its log; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval import manifest as mf
from llava.eval.plan import Run, check_tasks, plan_commands
from llava.eval.tables import Table, load_table
from llava.eval.task_names import check_scorer_tools

CACHE_DIR = mf.CACHE_DIR


@dataclass
class Planned:
    """One run of the table with its manifest and the command the runner launches."""

    run: Run
    manifest: dict[str, Any]
    key: str
    argv: list[str]

    @property
    def label(self) -> str:
        return f"{self.run.row} / {self.run.column}"

    @property
    def out(self) -> Path:
        return Path(self.run.output_path)


def expected_manifest(run: Run) -> dict[str, Any]:
    """The manifest of ``run`` as planned (what a finished run of it must carry)."""
    return mf.manifest_of_command(run.argv)


def prepare(table: Table, runs: list[Run], env: dict[str, str], *, check_output: bool = True,
            min_free_mb: float = mf.DEFAULT_MIN_FREE_MB) -> list[Planned]:
    """Manifests and commands of ``runs``, and every check that needs no model: ``ValueError`` /
    ``OSError`` naming the run and what was expected."""
    planned = []
    for run in runs:
        label = f"{run.row} / {run.column}"
        try:
            manifest = expected_manifest(run)
        except ValueError as err:
            raise ValueError(f"{table.name}: {label}: {err}") from None
        try:
            check_scorer_tools(str(manifest.get("task") or "").split(","))
        except ValueError as err:
            raise ValueError(f"{table.name}: {label}: {err}") from None
        frames = manifest.get("frames")
        if frames is not None and (not isinstance(frames, int) or frames < 1):
            raise ValueError(f"{table.name}: {label}: max_frames_num={frames!r} is not valid; expected an integer >= 1")
        key = mf.manifest_key(manifest)
        argv = [*run.expand(env), "--use_cache", str(Path(run.output_path) / CACHE_DIR / key[:16])]
        if check_output:
            try:
                mf.check_writable(run.output_path, min_free_mb)
            except OSError as err:
                raise OSError(err.errno, f"{table.name}: {label}: {err.strerror or err}") from None
        planned.append(Planned(run, manifest, key, argv))
    return planned


class _Signals:
    """SIGINT / SIGTERM while a child runs: passed on to its process group, remembered for the exit."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signum)
            except ProcessLookupError:
                pass


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM when the runner dies (even by SIGKILL), so that an
    evaluation never outlives its runner unseen; elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _launch(p: Planned, signals: _Signals) -> int:
    """Run ``p``'s command in its own process group, its output to the console and ``lmms_eval.log``."""
    p.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LMMS_CACHE_RUN_ID=p.key[:16], PYTHONUNBUFFERED="1")
    with open(p.out / "lmms_eval.log", "w", encoding="utf-8") as log:
        child = subprocess.Popen(p.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, text=True, errors="replace", bufsize=1,
                                 preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        signals.child = child
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
        code = child.wait()
        signals.child = None
    return code


def _first_error(log: Path) -> str:
    from llava.eval.runlog import first_error

    try:
        return first_error(log.read_text(encoding="utf-8", errors="replace")) or "(empty log)"
    except OSError:
        return "(no log)"


def run_table(table_name: str, *, rows: list[str] | None = None, columns: list[str] | None = None,
              output_dir: str | None = None, dry_run: bool = False, force: bool = False,
              min_free_mb: float = mf.DEFAULT_MIN_FREE_MB, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHON", sys.executable)
    env.setdefault("NUM_GPUS", "1")
    table = load_table(table_name)
    runs = plan_commands(table, rows, columns, output_dir)
    if not dry_run:
        check_tasks(table, runs)
    planned = prepare(table, runs, env, check_output=not dry_run, min_free_mb=min_free_mb)
    root = Path(output_dir or table.output_dir)
    total = len(planned)
    if dry_run:
        import shlex

        for i, p in enumerate(planned, 1):
            verdict = mf.check_finished(p.out, p.manifest)
            if verdict.finished and not force:
                print(f"# [{i}/{total}] {p.label}: finished, skipped ({p.out})")
                continue
            print(f"# [{i}/{total}] {p.label}" + ("" if not mf.results_files(p.out) else f" (re-run: {verdict.why})"))
            print(shlex.join(p.argv))
        return 0

    failed: list[str] = []
    skipped = done_now = 0
    with mf.locked(root, what=f"python -m llava.eval.runner {table_name}"), _Signals() as signals:
        for i, p in enumerate(planned, 1):
            if signals.received is not None:
                break
            verdict = mf.check_finished(p.out, p.manifest)
            if verdict.finished and not force:
                skipped += 1
                print(f"[{i}/{total}] {p.label}: finished, skipped ({p.out})", flush=True)
                continue
            try:  # a writer still at work in the folder (an evaluation its killed runner left behind)
                with mf.locked(p.out):
                    pass
            except RuntimeError as err:
                failed.append(f"{p.label}: {err}")
                continue
            if mf.results_files(p.out) or (p.out / mf.MANIFEST_NAME).exists():
                why = "FORCE=1" if verdict.finished else verdict.why
                moved = mf.supersede(p.out, why)
                if moved is not None:
                    print(f"[{i}/{total}] {p.label}: re-running ({why}); the previous run is kept in {moved}",
                          flush=True)
            print(f"[{i}/{total}] {p.label} -> {p.out}", flush=True)
            mf.write_manifest(p.out, p.manifest, row=p.run.row, column=p.run.column)
            code = _launch(p, signals)  # the evaluation holds the folder's writer lock while it runs
            log = p.out / "lmms_eval.log"
            if signals.received is not None:
                print(f"[{i}/{total}] {p.label}: stopped by signal {signals.received} (exit code {code}); the "
                      "answers given so far are cached and the same command continues from them", flush=True)
                break
            verdict = mf.check_finished(p.out, p.manifest)
            if verdict.finished:
                done_now += 1
                from llava.eval import efficiency

                try:
                    for summary in efficiency.report(p.out):
                        print(f"{summary['path']}\n{efficiency.format_summary(summary)}\n", flush=True)
                except (OSError, ValueError) as err:
                    print(f"[{i}/{total}] {p.label}: no efficiency summary: {err}", flush=True)
                continue
            why = f"exit code {code}" if code != 0 else f"exited 0 but {verdict.why}"
            failed.append(f"{p.label}: {why} (log: {log})\n      {_first_error(log)}")

    from llava.eval import gather

    print()
    gather_args = [table_name] + (["--runs", output_dir] if output_dir else [])
    status = gather.main(gather_args)
    print()
    print(f"{table_name}: {total} runs, {done_now} finished now, {skipped} already finished, {len(failed)} failed")
    if signals.received is not None:
        name = signal.Signals(signals.received).name
        print(f"Stopped by {name}; re-launch the same command to continue (finished runs and cached answers are "
              "kept).")
        return 128 + signals.received
    if failed:
        for line in failed:
            print(f"  failed: {line}")
        print("Re-launch the same command to retry them (finished runs are skipped).")
        return 1
    return status


def _split(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="table name (configs/eval/<name>.yaml) or path to a table YAML")
    parser.add_argument("--rows", help="comma-separated row labels or slugs (default: all)")
    parser.add_argument("--columns", help="comma-separated column labels or slugs (default: all)")
    parser.add_argument("--output_dir", help="replace the table's output_dir")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--force", action="store_true", help="re-run finished runs (their results are kept aside)")
    parser.add_argument("--min-free-mb", type=float, default=mf.DEFAULT_MIN_FREE_MB,
                        help=f"free space each output folder needs before any model loads (default "
                             f"{mf.DEFAULT_MIN_FREE_MB} MB)")
    args = parser.parse_args(argv)
    try:
        return run_table(args.table, rows=_split(args.rows), columns=_split(args.columns),
                         output_dir=args.output_dir, dry_run=args.dry_run, force=args.force,
                         min_free_mb=args.min_free_mb)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

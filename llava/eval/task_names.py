"""Check lmms-eval task names before any model loads: a typo in a table config or ``--task`` fails
before a checkpoint is read, naming the task and the known ones; a captioning task on a machine without
Java (its scorer's PTB tokenizer and METEOR run it) fails the same way, with the line that installs it.

    python -m llava.eval.task_names mvbench videomme --include_path lmms_eval_tasks
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
from collections.abc import Iterable, Sequence


def task_manager(tasks: Iterable[str], include_paths: Sequence[str] = (), verbosity: str = "WARNING"):
    """lmms-eval's ``TaskManager`` over ``include_paths`` (and this package's tasks) that knows every
    name in ``tasks`` (tasks or groups). lmms-eval's own tasks are indexed only when the include paths
    lack one. ``ValueError`` naming each unknown task, its close matches and the
    bundled tasks otherwise."""
    from lmms_eval.tasks import TaskManager

    from llava.resources import tasks_dir

    wanted = list(dict.fromkeys(tasks))
    paths = list(dict.fromkeys([*map(str, include_paths), str(tasks_dir())]))
    manager = TaskManager(verbosity, include_path=paths, include_defaults=False)
    bundled = sorted(manager.all_tasks)
    if any(t not in manager.all_tasks for t in wanted):
        manager = TaskManager(verbosity, include_path=paths)
    unknown = [t for t in wanted if t not in manager.all_tasks]
    if unknown:
        known = manager.all_tasks
        hints = "; ".join(f"{t!r} (close: {difflib.get_close_matches(t, known, n=5, cutoff=0.6) or 'none'})"
                          for t in unknown)
        raise ValueError(f"unknown lmms-eval task(s): {hints}. Known: {len(known)} tasks and groups of lmms-eval "
                         f"and of the include paths {paths}, among them this package's {bundled}; "
                         "list them all with `python -m lmms_eval --tasks list`")
    return manager


#: tasks (name prefixes) scored by pycocoevalcap, whose PTB tokenizer and METEOR run ``java``
JAVA_TASK_PREFIXES = ("youcook2", "vatex", "aot_smoke_caption")
JAVA_INSTALL = "sudo apt-get install -y default-jre-headless"


def check_scorer_tools(tasks: Iterable[str]) -> None:
    """``ValueError`` naming the captioning tasks among ``tasks`` when ``java`` is not on ``PATH``, so that
    an evaluation does not generate every caption and then fail to score them."""
    needing = [t for t in dict.fromkeys(tasks) if t.startswith(JAVA_TASK_PREFIXES)]
    if needing and shutil.which("java") is None:
        raise ValueError(f"task(s) {needing} are scored by pycocoevalcap, whose PTB tokenizer and METEOR run Java, "
                         f"and no `java` is on PATH; expected a Java runtime (Debian / Ubuntu: `{JAVA_INSTALL}`)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.task_names", description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="lmms-eval task or group names")
    parser.add_argument("--include_path", action="append", default=[], help="extra task folder (repeatable)")
    args = parser.parse_args(argv)
    try:
        task_manager(args.tasks, args.include_path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

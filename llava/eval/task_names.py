"""Check lmms-eval task names before any model loads: a typo in a table config or ``--task`` fails
before a checkpoint is read, naming the task and the known ones.

    python -m llava.eval.task_names mvbench videomme --include_path lmms_eval_tasks
"""

from __future__ import annotations

import argparse
import difflib
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

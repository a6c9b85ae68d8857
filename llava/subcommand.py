"""What the ``aot`` command shares with the apps that also run as ``python -m``: the parser frame and the
error handling.

:mod:`llava.cli` builds ``aot`` with every subcommand and dispatches to the apps. An app
(:mod:`llava.eval.sweep`, :mod:`llava.viz`) runs its own subcommand through :func:`run_subcommand`,
which parses, reports and exits exactly as ``aot <name>`` does, without importing :mod:`llava.cli`:
the apps sit below the command that dispatches to them (tests/test_layering.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

PROG = "aot"
#: the ``aot`` subcommands, in the order :func:`llava.cli.build_parser` adds them (tests/test_entry_points.py
#: checks the two agree): the choices the usage line of a parent-level error lists
COMMANDS = ("infer", "demo", "report", "paths", "tiny-checkpoint", "sweep", "viz")


def call(args: argparse.Namespace) -> int:
    """``args.func(args)``; a ValueError or FileNotFoundError (a bad argument, a missing file) is
    printed as ``aot <command>: error: <message>`` on stderr and gives exit status 2."""
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


def run_subcommand(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                   run: Callable[[argparse.Namespace], int], argv: Sequence[str] | None = None) -> int:
    """``aot <name> <argv>`` (``argv`` defaults to ``sys.argv[1:]``): ``add_arguments`` fills the
    subcommand's parser, ``run`` runs it. Usage, help and error messages are those of ``aot <name>``."""
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    subparser = sub.add_parser(name)
    add_arguments(subparser)
    subparser.set_defaults(func=run)
    args = parser.parse_args([name, *(sys.argv[1:] if argv is None else argv)])
    return call(args)

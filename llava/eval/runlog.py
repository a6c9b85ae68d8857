"""The first line that says why a run failed, read from its console log.

    python -m llava.eval.runlog runs/eval/llava_ov_7b/aot_10pct/mvbench/lmms_eval.log

lmms-eval 0.7.3 catches an evaluation's exception, logs it and exits 0, so a failed run is known by
its missing results file and its cause only by its log. This prints, in that order of preference: the
first exception line (``ModuleNotFoundError: No module named 'filelock._api'``), the first
``ERROR``-level log line, the first ``error:`` line of a command line, the last non-empty line.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_EXCEPTION = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Failure)):(?:\s|$)")
_LOG_ERROR = re.compile(r"\|\s*(?:ERROR|CRITICAL)\s*\|")
_CLI_ERROR = re.compile(r"(?:^|\s)error:\s", re.IGNORECASE)


def first_error(text: str) -> str | None:
    """The line of ``text`` (a run's console output) that best says why it failed; None when empty."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for pattern in (_EXCEPTION, _LOG_ERROR, _CLI_ERROR):
        for line in lines:
            if pattern.search(line):
                return line.strip()
    return lines[-1].strip() if lines else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.runlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="a run's console log (lmms_eval.log)")
    path = Path(parser.parse_args(argv).log)
    if not path.is_file():
        print(f"(no log at {path})")
        return 0
    print(first_error(path.read_text(encoding="utf-8", errors="replace")) or "(the log is empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

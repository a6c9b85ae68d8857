"""Every console script, ``aot`` subcommand and ``python -m`` entry point answers ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _modules_with_main() -> list[str]:
    found = []
    for package in ("llava", "visionzip", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


MODULES = _modules_with_main()
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def _aot_subcommands() -> list[str]:
    out = subprocess.run([str(BIN / "aot"), "--help"], capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"\{([a-z,-]+)\}", out)
    assert match, out
    return match.group(1).split(",")


def test_every_entry_point_is_found():
    # a guard on the discovery above: these must be among the modules tested
    expected = {"llava.cli", "benchmarks.tower", "benchmarks.compression", "llava.train.train", "llava.eval.gather"}
    assert expected <= set(MODULES)
    assert SCRIPTS == ["aot"]


@pytest.mark.parametrize("module", MODULES)
def test_python_m_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout.lower(), proc.stdout[-2000:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_help(script):
    proc = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-3000:]
    subcommands = _aot_subcommands()
    assert {"infer", "demo", "report", "sweep", "viz", "paths", "tiny-checkpoint"} <= set(subcommands)
    for sub in subcommands:
        proc = subprocess.run([str(BIN / script), sub, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (sub, proc.stderr[-3000:])


def _outcome(main, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, a bad flag
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("app, argv", [
    ("sweep", ["--help"]), ("sweep", ["--no-such-flag"]), ("sweep", ["--retentions"]), ("sweep", ["--limit", "-1"]),
    ("viz", ["--help"]), ("viz", ["--no-such-flag", "1"]), ("viz", ["--frames", "x"]), ("viz", ["--out", "x.jpg"]),
])
def test_python_m_apps_answer_as_their_aot_subcommand(app, argv, capsys, tmp_path):
    # python -m llava.eval.sweep / llava.viz parse, report and exit as aot sweep / aot viz, without importing llava.cli
    import argparse

    from llava import cli, subcommand, viz
    from llava.eval import sweep

    (choices,) = [a.choices for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert tuple(choices) == subcommand.COMMANDS
    if app == "sweep" and "--help" not in argv:
        argv = [*argv, "--out", str(tmp_path)]
    module = {"sweep": sweep, "viz": viz}[app]
    expected = _outcome(cli.main, [app, *argv], capsys)
    assert expected[0] != 0 or "--help" in argv
    assert _outcome(module.main, argv, capsys) == expected

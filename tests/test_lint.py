"""The repository passes the linter it declares: ``ruff check`` from the repository root, with the
rules ``[tool.ruff]`` of pyproject.toml selects (whatever they are), run by the ruff installed next to
this interpreter (the ``dev`` extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ruff() -> str:
    name = "ruff.exe" if sys.platform == "win32" else "ruff"
    found = Path(sys.executable).parent / name
    if found.is_file():
        return str(found)
    on_path = shutil.which("ruff")
    if on_path is None:
        pytest.fail(f"ruff is not installed next to {sys.executable} nor on PATH; "
                    'expected the dev extra: pip install -e ".[dev]"')
    return on_path


def _check(ruff: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing(ruff):
    proc = _check(ruff)
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def test_ruff_reports_a_finding(ruff, tmp_path):
    """The same invocation with the project's settings fails on a file with an unused import."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    proc = _check(ruff, "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert proc.returncode == 1 and "F401" in proc.stdout, proc.stdout + proc.stderr

"""The locked set-up: the lock covers pyproject.toml, and a stale lock stops the set-up naming the
package before anything is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path) -> Path:
    """A copy of what the set-up reads: its scripts, pyproject.toml and the lock."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "lockfile.py", "lock.in", "lock.sh"):
        shutil.copy(ROOT / "scripts" / name, root / "scripts" / name)
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, root / name)
    return root


def test_the_lock_covers_pyproject_and_this_platform():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lockfile.py"), "check", str(ROOT / "requirements.lock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lock = (ROOT / "requirements.lock").read_text()
    assert "torch==2.14.1" in lock and "torchvision==0.29.1" in lock and "lmms-eval==0.7.3" in lock
    assert "\nfilelock==3." in lock            # lmms-eval 0.7.3 imports filelock._api, gone in filelock 4
    assert lock.count("--hash=sha256:") > 300   # hashes, checked by pip --require-hashes


def test_the_installed_environment_is_the_lock():
    """What this test runs in was installed from the lock (pip freeze agrees on every locked pin)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import lockfile
    finally:
        sys.path.pop(0)
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    _, blocks = lockfile.read_blocks(ROOT / "requirements.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {name: (version, installed.get(name)) for name, (version, _) in blocks.items()
             if installed.get(name, "").split("+")[0] != version}
    assert not wrong, f"installed versions differ from requirements.lock: {wrong}"


def test_a_dependency_added_without_refreshing_the_lock_stops_the_setup(tmp_path):
    root = _tree(tmp_path)
    pyproject = (root / "pyproject.toml").read_text()
    pyproject = pyproject.replace('    "pyyaml>=6.0",\n', '    "pyyaml>=6.0",\n    "einops-exts>=0.1",\n')
    pyproject = pyproject.replace('"transformers>=5.0,<6"', '"transformers>=5.30,<6"')
    (root / "pyproject.toml").write_text(pyproject)
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ("einops-exts: asked for by pyproject.toml [project] dependencies (einops-exts>=0.1) "
            "but not in requirements.lock") in proc.stderr
    assert ("transformers: requirements.lock pins 5.24.0, pyproject.toml [project] dependencies "
            "asks for transformers<6,>=5.30") in proc.stderr
    assert "bash scripts/lock.sh" in proc.stderr
    site = next((root / ".venv" / "lib").glob("python*/site-packages"))
    assert not list(site.glob("torch*")) and not (root / ".venv" / ".aot-setup").exists()   # nothing installed


def test_a_missing_lock_is_named(tmp_path):
    root = _tree(tmp_path)
    (root / "requirements.lock").unlink()
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "requirements.lock is missing" in proc.stderr, proc.stderr

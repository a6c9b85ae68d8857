"""Read and check requirements.lock (written by scripts/lock.sh with pip-tools' pip-compile).

    python scripts/lockfile.py check requirements.lock          # does the lock cover pyproject.toml?
    python scripts/lockfile.py split requirements.lock DIR      # DIR/first.txt, DIR/built_against_torch.txt
    python scripts/lockfile.py stamp requirements.lock          # record the platform it was resolved on

``check`` exits 1 naming each requirement of pyproject.toml (dependencies and every extra) or of
scripts/lock.in that the lock does not pin, or pins at a version outside the requirement, and when
this interpreter's platform is not the lock's. It runs before anything is installed, with the
standard library and the ``packaging`` that pip itself vendors, so a stale lock is caught before pip
installs something other than what pyproject.toml asks for.
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source packages whose build imports torch: installed after the rest, without build isolation
#: (an isolated build would download a second torch just to build them).
BUILT_AGAINST_TORCH = ("deepspeed",)
PLATFORM_KEY = "# aot-lock-platform:"

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a bare virtual environment: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def this_platform() -> str:
    return f"{sys.platform}-{platform.machine().lower()} cp{sys.version_info.major}{sys.version_info.minor}"


def read_blocks(lock: Path) -> tuple[list[str], dict[str, tuple[str, list[str]]]]:
    """(header lines, {canonical name: (version, the block's lines)}) of a pip-compile lock."""
    header: list[str] = []
    blocks: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            current = [line]
            blocks[canonicalize_name(match.group(1))] = (match.group(2), current)
        elif current is not None and line.startswith(" "):
            current.append(line)
        elif current is None:
            header.append(line)
        else:
            current = None if line.strip() == "" else current
    return header, blocks


def lock_platform(header: list[str]) -> str | None:
    for line in header:
        if line.startswith(PLATFORM_KEY):
            return line[len(PLATFORM_KEY):].strip()
    return None


def wanted_requirements() -> list[tuple[str, Requirement]]:
    """(where it is asked for, requirement) for pyproject.toml's dependencies, every extra, and lock.in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = [("pyproject.toml [project] dependencies", Requirement(r)) for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out += [(f"pyproject.toml extra '{extra}'", Requirement(r)) for r in reqs]
    for line in (ROOT / "scripts" / "lock.in").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(("scripts/lock.in", Requirement(line)))
    return out


def problems(lock: Path) -> list[str]:
    header, blocks = read_blocks(lock)
    found = []
    recorded = lock_platform(header)
    if recorded is not None and recorded != this_platform():
        found.append(f"the lock was resolved for {recorded}, this interpreter is {this_platform()}: "
                     "install unlocked with AOT_UNLOCKED=1 bash scripts/setup.sh")
    for source, req in wanted_requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = blocks.get(canonicalize_name(req.name))
        if pinned is None:
            found.append(f"{req.name}: asked for by {source} ({req}) but not in {lock.name}")
        elif req.specifier and not req.specifier.contains(pinned[0], prereleases=True):
            found.append(f"{req.name}: {lock.name} pins {pinned[0]}, {source} asks for {req}")
    return found


def cmd_check(lock: Path) -> int:
    if not lock.is_file():
        print(f"[setup] {lock} is missing; expected the lock written by bash scripts/lock.sh "
              "(or install unlocked: AOT_UNLOCKED=1 bash scripts/setup.sh)", file=sys.stderr)
        return 1
    found = problems(lock)
    if found:
        print(f"[setup] {lock.name} does not match what it must install:", file=sys.stderr)
        for item in found:
            print(f"  - {item}", file=sys.stderr)
        print("Refresh the lock (bash scripts/lock.sh) and commit it with the change to pyproject.toml, "
              "or install unlocked: AOT_UNLOCKED=1 bash scripts/setup.sh", file=sys.stderr)
        return 1
    return 0


def cmd_split(lock: Path, out_dir: Path) -> int:
    header, blocks = read_blocks(lock)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = [line for name, (_, lines) in blocks.items() if name not in BUILT_AGAINST_TORCH for line in lines]
    late = [line for name, (_, lines) in blocks.items() if name in BUILT_AGAINST_TORCH for line in lines]
    (out_dir / "first.txt").write_text("\n".join(first) + "\n", encoding="utf-8")
    (out_dir / "built_against_torch.txt").write_text("\n".join(late) + "\n", encoding="utf-8")
    return 0


def cmd_stamp(lock: Path) -> int:
    lines = [line for line in lock.read_text(encoding="utf-8").splitlines() if not line.startswith(PLATFORM_KEY)]
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines.insert(end, f"{PLATFORM_KEY} {this_platform()}")
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    usage = __doc__.split("\n\n")[1]
    if len(argv) < 2 or argv[0] not in ("check", "split", "stamp") or (argv[0] == "split") != (len(argv) == 3):
        print(f"usage:\n{usage}", file=sys.stderr)
        return 2
    lock = Path(argv[1])
    if argv[0] == "check":
        return cmd_check(lock)
    if argv[0] == "split":
        return cmd_split(lock, Path(argv[2]))
    return cmd_stamp(lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

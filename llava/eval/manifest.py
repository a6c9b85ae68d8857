"""What an evaluation run is, and whether the one in a folder finished: run manifests, keys, checks.

A **manifest** states every setting a run's number depends on: the lmms-eval model, its model
arguments with the compression resolved to its content (an edited preset YAML is a change), the
checkpoint (for a local folder, the hash of its ``config.json`` and the names and sizes of its weight
files), the task, the limit, the frames, the other lmms-eval arguments, and the versions of lmms-eval
and of this package. Its **key** is the SHA-256 of its canonical JSON. The table runner writes it as
``<output_path>/aot_run.json`` before the run starts; ``gather`` and ``aot report`` compare it with
what they are asked to show.

A run **finished** when :func:`check_finished` finds, under its folder, a results file that parses,
names the task, and counts the samples the run should have (``n-samples`` effective equal to the limit,
or to the task's size when there is none), a samples file with that many distinct documents, and a
manifest equal to the expected one. Anything else (no results, a truncated or empty file, a
``--limit`` smoke run standing for the full benchmark, another compression) is not finished, with the
reason in words.

Also here: atomic writes (:func:`write_json_atomic`), one writer per output folder
(:class:`WriterLock`) and the check that a folder is writable with room (:func:`check_writable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "aot-run/1"
MANIFEST_NAME = "aot_run.json"
LOCK_NAME = ".aot_writer.lock"
#: the run's response cache (``--use_cache``), kept when a run is superseded: its keys hold the settings
CACHE_DIR = ".cache"
#: lmms-eval arguments that say where or how verbosely a run writes, not what it computes
_NOT_SETTINGS = {"output_path", "log_samples", "use_cache", "verbosity", "model", "model_args", "tasks", "limit",
                 "wandb_args", "show_config", "cache_requests"}
#: checkpoint files whose names and sizes identify the weights (reading them whole would take minutes)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
DEFAULT_MIN_FREE_MB = 64


# --------------------------------------------------------------------------------------------- writing
def write_bytes_atomic(content: bytes, path: str | Path) -> Path:
    """Write ``content`` to ``path`` so that a reader sees the old file or the whole new one, never a part:
    a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """:func:`write_text_atomic` of ``data`` as indented JSON."""
    return write_text_atomic(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", path)


def check_writable(folder: str | Path, min_free_mb: float = DEFAULT_MIN_FREE_MB) -> None:
    """Raise ``OSError`` naming ``folder`` unless it can be created, written to, and has ``min_free_mb``
    free: checked before any model loads, so a run never computes results it cannot save."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".aot_write_probe.{os.getpid()}"
        with open(probe, "wb") as handle:
            handle.write(b"0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as err:
        raise OSError(err.errno, f"output folder {folder} is not writable ({err.strerror or err}); expected a "
                                 "folder this process can write its results to") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < min_free_mb:
        raise OSError(28, f"output folder {folder} has {free_mb:.1f} MB free; expected at least "
                          f"{min_free_mb:g} MB for the results and logged samples")


class WriterLock:
    """One writer per output folder: an exclusive ``flock`` on ``<folder>/.aot_writer.lock``, which
    states its owner (pid, host, command, time). The kernel releases it when the owner dies, however it
    dies, so a killed run never leaves a stale lock. A second writer gets ``RuntimeError`` naming the
    first."""

    def __init__(self, folder: str | Path, what: str = "") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._handle = None

    def acquire(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(f"{self.path.parent} is being written by {owner}; expected one writer per output "
                               "folder (wait for it, stop it, or choose another output folder)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -------------------------------------------------------------------------------------------- manifest
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """The versions a run's numbers depend on beyond its arguments."""
    return {"lmms_eval": _version("lmms_eval"), "aot-video": _version("aot-video")}


def parse_model_args(text: str) -> dict[str, str]:
    """``k=v,k=v`` (lmms-eval's ``--model_args``) as a dict, values as written."""
    out: dict[str, str] = {}
    for part in (p for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--model_args item {part!r} has no '='; expected key=value pairs joined by commas")
        out[key.strip()] = value.strip()
    return out


def compression_content(spec: str | None) -> dict[str, Any]:
    """The compression a run uses, resolved to what it computes: the spec as written and the validated
    configuration (a preset's YAML read now, so an edit to it is a different run)."""
    import visionzip

    name = spec if spec not in (None, "") else None
    if name is None:
        raise ValueError("compression is empty; expected 'none', a preset name, a YAML path or '<method>@<retention>'")
    config = visionzip.load_config(name)
    # the method too: two methods can share their fields (a preset YAML switched from pool to random)
    return {"spec": name, "method": None if config is None else config.method,
            "config": None if config is None else config.to_dict()}


def checkpoint_fingerprint(pretrained: str | None) -> dict[str, Any] | None:
    """A local checkpoint folder's identity: the SHA-256 of its ``config.json`` and the names and sizes
    of its weight files; None for a hub id (its revision is the user's to pin)."""
    if not pretrained or not Path(pretrained).is_dir():
        return None
    folder = Path(pretrained)
    config = folder / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    weights = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    return {"config_sha256": digest, "weights": [list(w) for w in weights]}


def lmms_argv_settings(argv: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The settings in an lmms-eval command line: ``{flag: value}`` for every ``--flag [value]`` after
    the module (``-m lmms_eval`` / ``-m llava.eval.lmms``)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "-m" and i + 1 < len(args) and args[i + 1] in ("lmms_eval", "llava.eval.lmms"):
            args = args[i + 2:]
            break
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if flag.startswith("--"):
            name = flag[2:].replace("-", "_")
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                out[name] = args[i + 1]
                i += 2
                continue
            out[name] = True
        i += 1
    return out


def _limit(value: Any) -> int | float | None:
    if value in (None, ""):
        return None
    number = float(value)
    return int(number) if number >= 1 and number == int(number) else number


def build_manifest(settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the run an lmms-eval command line describes (``settings`` from
    :func:`lmms_argv_settings`): see the module docstring for what it holds."""
    model_args = parse_model_args(str(settings.get("model_args", "")))
    if "compression" in model_args:
        model_args["compression"] = compression_content(model_args["compression"])  # type: ignore[assignment]
    frames = model_args.get("max_frames_num")
    other = {k: v for k, v in sorted(settings.items()) if k not in _NOT_SETTINGS}
    return {
        "format": FORMAT,
        "model": settings.get("model"),
        "model_args": model_args,
        "checkpoint": checkpoint_fingerprint(model_args.get("pretrained")),
        "task": settings.get("tasks"),
        "limit": _limit(settings.get("limit")),
        "frames": int(frames) if frames not in (None, "") and str(frames).lstrip("-").isdigit() else frames,
        "lmms_args": other,
        "versions": versions(),
    }


def manifest_of_command(argv: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The manifest of the run an lmms-eval command line (a planned table run's ``argv``) describes."""
    return build_manifest(lmms_argv_settings(argv))


def manifest_key(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The settings in which ``old`` and ``new`` differ, as ``"path: old -> new"`` lines."""
    if old is None:
        return ["no manifest"]
    lines: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            lines.append(f"{path}: {_short(a)} -> {_short(b)}")

    walk(old, new, "")
    return lines


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest in ``folder`` (``aot_run.json``'s ``manifest``), or None when there is none or it does
    not parse."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("manifest") if isinstance(data, dict) else None


def write_manifest(folder: str | Path, manifest: dict[str, Any], *, row: str = "", column: str = "") -> Path:
    return write_json_atomic({"key": manifest_key(manifest), "row": row, "column": column, "manifest": manifest},
                             Path(folder) / MANIFEST_NAME)


# ------------------------------------------------------------------------------------------- finished
def results_files(folder: str | Path) -> list[Path]:
    """lmms-eval results files under ``folder``, oldest first, outside hidden folders (``.superseded``)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*_results.json") if not any(part.startswith(".") for part in
                                                                  p.relative_to(root).parts[:-1])]
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def _samples_doc_ids(results_path: Path, task: str) -> list[Any] | None:
    prefix = results_path.name[: -len("_results.json")]
    path = results_path.with_name(f"{prefix}_samples_{task}.jsonl")
    if not path.is_file():
        return None
    ids = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                ids.append(json.loads(line).get("doc_id"))
    return ids


@dataclass(frozen=True)
class Verdict:
    """Whether a run folder holds the finished run it should: ``finished``, and ``why`` not."""

    finished: bool
    why: str
    results: Path | None = None


def check_results(path: Path, task: str | None, limit: int | float | None) -> str | None:
    """Why ``path`` is not a complete results file of ``task`` at ``limit`` (None when it is)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{path.name} does not parse ({type(err).__name__}: {err}); a save that failed part-way"
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not data["results"]:
        return f"{path.name} holds no results"
    tasks = [t for t in (task or "").split(",") if t] or list(data["results"])
    groups = data.get("group_subtasks") or {}
    for name in tasks:
        if name not in data["results"]:
            return f"{path.name} has no results for task {name!r}"
    leaves: list[str] = []
    todo = list(tasks)
    while todo:  # a group (MVBench's 20 tasks) counts its subtasks' samples
        name = todo.pop(0)
        if groups.get(name):
            todo = list(groups[name]) + todo
        else:
            leaves.append(name)
    for name in leaves:
        counts = (data.get("n-samples") or {}).get(name)
        if not isinstance(counts, dict):
            return f"{path.name} has no sample count for task {name!r}"
        original, effective = counts.get("original"), counts.get("effective")
        expected = original
        if isinstance(limit, int) and original is not None:
            expected = min(limit, original)
        elif isinstance(limit, float) and original is not None:  # lmms-eval's get_sample_size
            expected = min(math.ceil(original * limit), original) if 0 < limit < 1 else original
        if effective != expected:
            return f"{path.name} counts {effective} samples of {name}; expected {expected}"
        try:
            ids = _samples_doc_ids(path, name)
        except (OSError, ValueError) as err:
            return f"the logged samples of {name} do not parse ({type(err).__name__}: {err})"
        if ids is None:
            return f"{path.name} has no logged samples of {name} beside it"
        if len(ids) != len(set(ids)):
            return f"the samples of {name} repeat doc ids (two runs wrote into one folder)"
        if len(ids) != expected:
            return f"{len(ids)} logged samples of {name}; expected {expected}"
    return None


def check_finished(folder: str | Path, expected: dict[str, Any]) -> Verdict:
    """Whether ``folder`` holds the finished run of manifest ``expected`` (see the module docstring)."""
    folder = Path(folder)
    found = results_files(folder)
    if not found:
        return Verdict(False, "no results file")
    current = read_manifest(folder)
    if current is None:
        return Verdict(False, f"no manifest ({MANIFEST_NAME}) beside the results: their settings are unknown")
    if current != expected:
        changed = diff(current, expected)
        return Verdict(False, "settings changed: " + "; ".join(changed[:4]) + (" …" if len(changed) > 4 else ""))
    if len(found) > 1:
        return Verdict(False, f"{len(found)} results files; expected one run per folder", found[-1])
    why = check_results(found[-1], expected.get("task"), expected.get("limit"))
    if why is not None:
        return Verdict(False, why, found[-1])
    return Verdict(True, "finished", found[-1])


def supersede(folder: str | Path, why: str) -> Path | None:
    """Move what a run folder holds (results, samples, manifest, log; not the response cache, whose entries
    are keyed by the settings) into
    ``<folder>/.superseded/<time>/`` with a ``why.txt``, so that a re-run starts clean and nothing is lost;
    None when there was nothing to move."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    keep = {LOCK_NAME, ".superseded", CACHE_DIR}
    items = [p for p in folder.iterdir() if p.name not in keep and not p.name.startswith(".aot_write_probe")]
    if not items:
        return None
    dest = folder / ".superseded" / time.strftime("%Y%m%d_%H%M%S")
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
    dest.mkdir(parents=True)
    for item in items:
        shutil.move(str(item), str(dest / item.name))
    (dest / "why.txt").write_text(why + "\n", encoding="utf-8")
    return dest


@contextlib.contextmanager
def locked(folder: str | Path, what: str = ""):
    """``with locked(folder): ...`` holds :class:`WriterLock` on ``folder``."""
    lock = WriterLock(folder, what).acquire()
    try:
        yield lock
    finally:
        lock.release()

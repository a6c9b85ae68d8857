"""What the tests read of lmms-eval's files: a bundled task's module, loaded from its folder as lmms-eval
loads it, and an ``--output_path`` folder: the results file, a task's logged samples by doc id, a sample's
filtered answer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as module ``name`` (a task folder's ``utils.py``, ``make_videos.py``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def results(folder: Path) -> dict:
    """The run's one ``*_results.json``."""
    (path,) = folder.rglob("*_results.json")
    return json.loads(path.read_text())


def samples(folder: Path, task: str) -> dict[int, dict]:
    """``{doc_id: sample}`` of the task's ``*_samples_<task>.jsonl``."""
    (path,) = folder.rglob(f"*_samples_{task}.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {s["doc_id"]: s for s in rows}


def text(sample: dict) -> str:
    """The sample's answer after the task's filters."""
    resps = sample["filtered_resps"]
    return resps[0] if isinstance(resps, list) else resps

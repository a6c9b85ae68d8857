"""Reading an lmms-eval ``--output_path`` folder back in the tests: the results file, a task's logged samples
by doc id, a sample's filtered answer."""

from __future__ import annotations

import json
from pathlib import Path


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

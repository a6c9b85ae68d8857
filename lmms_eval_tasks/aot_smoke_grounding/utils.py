"""Hooks of the ``aot_smoke_grounding`` task (``aot_smoke_grounding.yaml``): lmms-eval's own Charades-STA
prompt and scoring, with the videos bundled in this folder.

A doc is one line of ``data.jsonl`` with Charades-STA's fields: ``video`` (file name in this folder),
``caption`` (the event's description) and ``timestamp`` (``[start, end]`` in seconds), plus ``id`` and
``duration``. Only :func:`doc_to_visual` is this task's own; the prompt, the per-sample results and the
R1@0.3 / 0.5 / 0.7 and mIoU aggregations (``charades_sta_IOU@3`` ... ``charades_sta_mIOU``, in percent) are
``lmms_eval.tasks.charades_sta.utils``'s. An answer without exactly one time interval scores IoU 0.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lmms_eval.tasks.charades_sta import utils as charades
from lmms_eval.tasks.charades_sta.utils import (  # noqa: F401 - the YAML names them through this module
    temporal_grounding_aggregate_iou3,
    temporal_grounding_aggregate_iou5,
    temporal_grounding_aggregate_iou7,
    temporal_grounding_aggregate_miou,
    temporal_grounding_doc_to_answer,
    temporal_grounding_process_results_generation,
)

TASK_DIR = Path(__file__).resolve().parent


def _charades_prompt() -> dict[str, str]:
    """The ``default`` prompt of lmms-eval's ``charades.yaml`` (its ``pre_prompt`` and ``post_prompt``)."""
    text = (Path(charades.__file__).parent / "charades.yaml").read_text()
    # the file tags hooks with !function, which yaml.safe_load rejects; those lines hold no prompt
    config = yaml.safe_load("\n".join(line for line in text.splitlines() if "!function" not in line))
    return dict(config["lmms_eval_specific_kwargs"]["default"])


CHARADES_PROMPT = _charades_prompt()


def doc_to_visual(doc: dict) -> list[str]:
    """``[absolute path of the doc's video]``, resolved against this file's folder (any cwd works)."""
    path = TASK_DIR / doc["video"]
    if not path.is_file():
        raise FileNotFoundError(
            f"doc {doc.get('id')!r}: video {doc['video']!r} not found in {TASK_DIR}; "
            f"recreate the videos with `python {TASK_DIR / 'make_videos.py'}`"
        )
    return [str(path)]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Charades-STA's prompt (``temporal_grounding_doc_to_text``): its pre prompt, the caption, its post
    prompt. ``pre_prompt`` / ``post_prompt`` in the YAML's ``lmms_eval_specific_kwargs`` replace the ones
    of lmms-eval's ``charades.yaml``, which apply otherwise."""
    return charades.temporal_grounding_doc_to_text(doc, {**CHARADES_PROMPT, **(lmms_eval_specific_kwargs or {})})

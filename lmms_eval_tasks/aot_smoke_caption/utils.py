"""Hooks of the ``aot_smoke_caption`` task (``aot_smoke_caption.yaml``): lmms-eval's own YouCook2 prompt and
scoring, with videos of the ``aot_smoke`` task.

A doc is one line of ``data.jsonl`` with YouCook2's fields: ``video_path`` (relative to this folder),
``youtube_id``, ``segment`` (``[start, end]`` seconds) and ``sentence`` (the reference caption), plus ``id``.
The scorer scores each group of docs sharing a ``youtube_id`` as one corpus and averages over groups; every
doc here is in the one group ``aot_smoke``, so each metric is a corpus score over the task. Only
:func:`doc_to_visual` is this task's own; the prompt, the per-sample results and the pycocoevalcap
aggregations (``Bleu_1`` .. ``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``, times 100) are
``lmms_eval.tasks.youcook2.utils``'s. METEOR and the tokenizer run Java.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent


def _youcook2():
    """``lmms_eval.tasks.youcook2.utils``. Importing it reads ``$HF_HOME`` (for YouCook2's own video
    folder, which this task does not use); where that is unset it is imported with Hugging Face's
    default ``~/.cache/huggingface``, and the environment is left as it was."""
    name = "lmms_eval.tasks.youcook2.utils"
    if "HF_HOME" in os.environ:
        return importlib.import_module(name)
    os.environ["HF_HOME"] = os.path.expanduser("~/.cache/huggingface")
    try:
        return importlib.import_module(name)
    finally:
        del os.environ["HF_HOME"]


youcook2 = _youcook2()
youcook2_doc_to_text = youcook2.youcook2_doc_to_text
youcook2_process_results = youcook2.youcook2_process_results
youcook2_bleu4 = youcook2.youcook2_bleu4
youcook2_bleu3 = youcook2.youcook2_bleu3
youcook2_bleu2 = youcook2.youcook2_bleu2
youcook2_bleu1 = youcook2.youcook2_bleu1
youcook2_meteor = youcook2.youcook2_meteor
youcook2_rougel = youcook2.youcook2_rougel
youcook2_cider = youcook2.youcook2_cider


def doc_to_visual(doc: dict) -> list[str]:
    """``[absolute path of the doc's video]``, ``video_path`` resolved against this file's folder."""
    path = (TASK_DIR / doc["video_path"]).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"doc {doc.get('id')!r}: video {doc['video_path']!r} not found (looked for {path}); the clips are "
            f"the aot_smoke task's, recreated with `python {TASK_DIR.parent / 'aot_smoke' / 'make_videos.py'}`"
        )
    return [str(path)]

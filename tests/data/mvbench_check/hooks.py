"""Hooks of ``mvbench_aot_check``: videos from this folder, MVBench's prompt layout, and lmms-eval's
own MVBench scoring and aggregation (imported, not copied)."""

from pathlib import Path

from lmms_eval.tasks.mvbench.utils import mvbench_aggregate_results, mvbench_process_results  # noqa: F401

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return [str(HERE / doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    options = "".join(f"({chr(65 + i)}) {c}\n" for i, c in enumerate(doc["candidates"]))
    return f"Question: {doc['question']}\nOptions:\n{options}Only give the best option."

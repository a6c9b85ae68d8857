"""Hooks of ``aot_videomme``: lmms-eval's own VideoMME functions (videos under ``$HF_HOME/videomme``)."""

from lmms_eval.tasks.videomme.utils import (  # noqa: F401
    videomme_aggregate_results,
    videomme_doc_to_text,
    videomme_doc_to_visual,
    videomme_process_results,
)

"""Hooks of the ``aot_smoke_mcq`` task (``aot_smoke_mcq.yaml``): visuals, prompt and scoring.

A doc is one line of ``data.jsonl``: ``id``, ``video`` (file name in this folder), ``question``,
``candidates`` (the options, in order) and ``answer`` (the correct option's letter).
"""

from __future__ import annotations

import re
import string
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
OPTION_LETTERS = string.ascii_uppercase

# the whole answer is one letter, in either case, optionally bracketed or followed by '.' or ':' -- "b", "(B)", "C."
_BARE_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:]?$")
# an upper-case letter standing alone inside a longer answer -- "B. red", "(C) blue", "The answer is D."
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def _option_letters(doc: dict) -> str:
    candidates = doc["candidates"]
    if not 2 <= len(candidates) <= len(OPTION_LETTERS):
        raise ValueError(
            f"doc {doc.get('id')!r}: 'candidates' must hold 2 to {len(OPTION_LETTERS)} options, got {len(candidates)}"
        )
    return OPTION_LETTERS[: len(candidates)]


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
    """Question, one ``(A) option`` line per candidate, then the post prompt (MVBench's layout).

    ``pre_prompt`` / ``post_prompt`` come from the YAML's ``lmms_eval_specific_kwargs``; without
    them both are empty.
    """
    kwargs = lmms_eval_specific_kwargs or {}
    options = "".join(
        f"({letter}) {option}\n" for letter, option in zip(_option_letters(doc), doc["candidates"], strict=True)
    )
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}\n{options}{kwargs.get('post_prompt', '')}"


def extract_option_letter(answer: str | None, num_options: int) -> str | None:
    """The first option letter (upper case) in a model's answer, or ``None`` when there is none.

    Follows lmms-eval's MVBench scoring: an answer that is just a letter counts in either case
    (``"b"``, ``"(B)"``, ``"C."``); otherwise the first upper-case letter standing alone
    (``"B. red"``, ``"The answer is (C)."``). Unlike MVBench, a lower-case letter inside a sentence
    is ignored, so the article in "a red square" is not read as option A. Letters beyond the
    ``num_options``-th are not options and are skipped.
    """
    valid = OPTION_LETTERS[:num_options]
    text = (answer or "").strip()
    bare = _BARE_LETTER.match(text)
    if bare:
        letter = bare.group(1).upper()
        return letter if letter in valid else None
    for match in _STANDALONE_LETTER.finditer(text):
        if match.group(1) in valid:
            return match.group(1)
    return None


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``{"acc": 1.0}`` when the first option letter of ``results[0]`` is the doc's answer, else ``{"acc": 0.0}``."""
    letters = _option_letters(doc)
    if doc["answer"] not in letters:
        raise ValueError(f"doc {doc.get('id')!r}: 'answer' must be one of {list(letters)}, got {doc['answer']!r}")
    prediction = extract_option_letter(results[0] if results else "", len(letters))
    return {"acc": 1.0 if prediction == doc["answer"] else 0.0}

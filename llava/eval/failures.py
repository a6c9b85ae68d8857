"""What a failed sample answers, so that the task's own scoring counts it as wrong.

A sample fails when its video is missing, corrupt or has no frames, or when its forward pass raises.
It must lower the task's score exactly as a wrong answer would. An empty answer does not do that in
lmms-eval 0.7.3: MVBench's aggregator (``mvbench_aggregate_results``) leaves empty answers out of its
denominator, so a failure *raised* the accuracy, and EgoSchema's and LongVideoBench's parsers
(``parse_multi_choice_response``) pick a random option for an answer without a letter, so a failure
was right one time in four or five.

So a failed sample of a multiple-choice task the paper tables use answers an option letter other
than the document's correct one, which each task's own ``process_results`` parses as that letter and
scores 0. The rule is chosen by the task's name (lmms-eval names every subtask after its benchmark:
``mvbench_action_sequence``, ``videomme``, ``longvideobench_val_v``, ``egoschema_subset``; this
package's ``aot_videomme`` scores as VideoMME) and reads the document's answer field:

=================  ==================================================  =============================
task name prefix   correct option in the document                     benchmark's parser
=================  ==================================================  =============================
``mvbench``        ``candidates.index(answer)``                       ``mcq_acc``
``videomme``       ``answer`` (a letter, four options)                ``extract_mcq_answer``
``longvideobench`` ``correct_choice`` (an index; ``option0..4``)      ``parse_multi_choice_response``
``egoschema``      ``answer`` (an index, five options)                ``parse_multi_choice_response``
``aot_smoke_mcq``  ``answer`` (a letter)                              this package's ``extract_option_letter``
=================  ==================================================  =============================

A document without its answer (EgoSchema's full test set, scored by the benchmark's server) has no
wrong letter to give: it answers ``""``, which lmms-eval's parser turns into a random guess, and the
failure is counted in the efficiency summary, which is where it can be seen. Every other task gets
``""``, which a task's own scoring normally counts as wrong.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

LETTERS = string.ascii_uppercase


def _other_letter(correct: int, options: int) -> str:
    if options < 2 or not 0 <= correct < options:
        raise ValueError(f"correct option {correct} of {options}: expected 0 <= correct < options, options >= 2")
    return LETTERS[1 if correct == 0 else 0]


def _mvbench(doc: dict) -> str:
    candidates = list(doc["candidates"])
    return _other_letter(candidates.index(doc["answer"]), len(candidates))


def _videomme(doc: dict) -> str:
    return _other_letter(LETTERS.index(str(doc["answer"]).strip().upper()), 4)


def _longvideobench(doc: dict) -> str:
    options = sum(1 for i in range(5) if doc.get(f"option{i}", "N/A") != "N/A")
    return _other_letter(int(doc["correct_choice"]), options)


def _egoschema(doc: dict) -> str:
    answer = doc.get("answer")
    if answer in (None, ""):
        raise KeyError("answer")
    return _other_letter(int(answer), 5)


def _letter_answer(doc: dict) -> str:
    return _other_letter(LETTERS.index(str(doc["answer"]).strip().upper()), len(doc["candidates"]))


#: (task name prefix, rule) in the order they are tried; the first prefix that matches decides.
RULES: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("mvbench", _mvbench),
    ("aot_videomme", _videomme),
    ("videomme", _videomme),
    ("longvideobench", _longvideobench),
    ("egoschema", _egoschema),
    ("aot_smoke_mcq", _letter_answer),
)


def wrong_answer(task: str, doc: dict[str, Any] | None) -> str:
    """The answer of a failed sample of ``task``: a wrong option letter where the task's rule and the
    document's answer allow it, else ``""``."""
    for prefix, rule in RULES:
        if task.startswith(prefix):
            if doc is None:
                return ""
            try:
                return rule(doc)
            except (KeyError, ValueError, TypeError):
                return ""
    return ""

"""Training data as LLaVA-NeXT reads it: data lists, ChatML labels, the dataset and the collator.

Data files are LLaVA's JSON list, JSON Lines, or LLaVA-NeXT's YAML mixture::

    datasets:
      - json_path: llava_video_178k/0_30_s_academic.json   # relative to this YAML, or absolute
        sampling_strategy: all                              # all | first:N | end:N | random:N (N or P%)

Each record is ``{"id", "video" | "image" (path or list of paths) | neither, "conversations":
[{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}`` with paths relative
to ``video_folder`` / ``image_folder``. Every record is checked before training, without reading
its media (:func:`validate_record`: turns, ``<image>`` count, media fields, files present); the
invalid ones are dropped, with one summary of what was skipped and why (:func:`load_valid_records`).

A sample becomes one ChatML sequence (the ``qwen_1_5`` template)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n       labels -100
    <|im_start|>user\\n[-200]\\nQ<|im_end|>\\n                           labels -100 (the placeholder too)
    <|im_start|>assistant\\nA<|im_end|>\\n                               labels = input_ids

``<image>`` is not a vocabulary token: it becomes ``IMAGE_TOKEN_INDEX`` (-200), where the model
splices the visual tokens. Up to ``<|im_start|>assistant\\n`` the sequence is token for token the
inference prompt of ``conv_templates["qwen_1_5"]`` (``llava.families.llava_next.answer_loaded``, the
lmms-eval adapters).

Usage::

    dataset = SupervisedDataset("data.yaml", tokenizer, image_processor, model_config=model.config,
                                video_folder="videos/", frames_upbound=64, add_time_instruction=True)
    collator = DataCollatorForSupervisedDataset(tokenizer, model_max_length=32768)
    batch = collator([dataset[0], dataset[1]])
    batch.pop("skipped_samples")
    loss = model(**batch).loss
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, get_conv_template
from llava.mm_utils import process_images
from llava.video import VideoDecodeError, load_video

__all__ = [
    "DEFAULT_MAX_INVALID_FRACTION",
    "DEFAULT_SYSTEM_MESSAGE",
    "INVALID_REASONS",
    "SAMPLING_STRATEGIES",
    "DataCollatorForSupervisedDataset",
    "InvalidRecordError",
    "RecordValidation",
    "SkippedSampleWarning",
    "SupervisedDataset",
    "load_data_list",
    "load_valid_records",
    "preprocess_qwen",
    "system_message_from_template",
    "validate_record",
    "validate_records",
]

logger = logging.getLogger(__name__)

#: ``sampling_strategy`` names of a YAML mixture entry (``all``, or ``NAME:N`` / ``NAME:P%``).
SAMPLING_STRATEGIES = ("all", "first", "end", "random")

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_CHATML_SYSTEM_PREFIX = "<|im_start|>system\n"

#: Why a record cannot become a training sample, in the order :func:`validate_record` checks them
#: (a record is counted under the first that applies).
INVALID_REASONS = (
    "no conversations",
    "malformed turn",
    "unknown role",
    "system turn not first",
    "turns do not alternate",
    "no final gpt turn",
    "both video and image",
    "bad media path",
    "visual input without image_processor",
    "<image> count mismatch",
    "missing video file",
    "missing image file",
)

#: Largest fraction of invalid records a training run tolerates (``--max_invalid_fraction``): a few
#: broken records in a large mixture are dropped, while a wrong ``video_folder`` or a broken
#: conversion (most records bad) stops the run before the model loads.
DEFAULT_MAX_INVALID_FRACTION = 0.05


class InvalidRecordError(ValueError):
    """A record that cannot become a training sample; ``reason`` is one of :data:`INVALID_REASONS`."""

    def __init__(self, reason: str, message: str):
        if reason not in INVALID_REASONS:
            raise ValueError(f"reason={reason!r}; expected one of {', '.join(INVALID_REASONS)}")
        super().__init__(message)
        self.reason = reason


def system_message_from_template(name: str) -> str:
    """The system message of a ChatML conversation template (``qwen_1_5`` -> "You are a helpful assistant.").

    Raises:
        ValueError: unknown template, or one that is not ChatML (its prompt is not what
            :func:`preprocess_qwen` renders).
    """
    conv = get_conv_template(name)
    if conv.sep_style not in (SeparatorStyle.CHATML, SeparatorStyle.QWEN) or not conv.system.startswith(
        _CHATML_SYSTEM_PREFIX
    ):
        raise ValueError(
            f"conversation template {name!r} is not ChatML (sep_style {conv.sep_style.name}); expected a Qwen "
            "template such as 'qwen_1_5' or 'qwen_2_5'"
        )
    return conv.system[len(_CHATML_SYSTEM_PREFIX) :]


#: System message of the ``qwen_1_5`` template, the one LLaVA-OneVision / LLaVA-Video were trained with.
DEFAULT_SYSTEM_MESSAGE = system_message_from_template("qwen_1_5")


class SkippedSampleWarning(UserWarning):
    """A sample was skipped because its video or image is missing or cannot be decoded."""


class _MediaError(Exception):
    """A sample's video or image cannot be used (missing, corrupt); the dataset skips the sample."""

    def __init__(self, path: str, cause: BaseException):
        super().__init__(f"{path}: {type(cause).__name__}: {cause}")
        self.path = path


# ---------------------------------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------------------------------
def _read_json_records(path: Path) -> list[dict]:
    """Records of a ``.json`` list or a ``.jsonl`` file, each checked to hold ``conversations``."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; expected a .json, .jsonl or .yaml file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc}); expected a list of LLaVA records") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: top level is a {type(records).__name__}; expected a JSON list of LLaVA records")
        where = [f"record {i}" for i in range(len(records))]
    elif suffix == ".jsonl":
        records, where = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}: line {lineno} is not valid JSON ({exc}); expected one record per line"
                ) from None
            where.append(f"line {lineno}")
    else:
        raise ValueError(f"data file {str(path)!r} has suffix {path.suffix!r}; expected .json, .jsonl, .yaml or .yml")
    for record, at in zip(records, where):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {at} is a {type(record).__name__}; expected an object with 'conversations'")
        conversations = record.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            name = f" (id {record['id']!r})" if "id" in record else ""
            raise ValueError(
                f"{path}: {at}{name} has no 'conversations' list; expected "
                '"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]'
            )
    return records


def _parse_strategy(strategy: Any, where: str) -> tuple[str, str | None]:
    """``"first:10"`` -> ``("first", "10")``; ``"all"`` -> ``("all", None)``."""
    if not isinstance(strategy, str):
        raise ValueError(f"{where}: sampling_strategy={strategy!r}; expected a string such as 'all' or 'random:10%'")
    name, _, count = strategy.strip().partition(":")
    name, count = name.strip(), count.strip()
    if name not in SAMPLING_STRATEGIES:
        raise ValueError(
            f"{where}: sampling_strategy={strategy!r} is unknown; expected 'all' or first|end|random followed by "
            "':N' or ':P%'"
        )
    if name == "all":
        if count:
            raise ValueError(f"{where}: sampling_strategy={strategy!r}; 'all' takes no count")
        return name, None
    if not count:
        raise ValueError(f"{where}: sampling_strategy={strategy!r} lacks its count; expected '{name}:N' or '{name}:P%'")
    return name, count


def _sample_count(count: str, total: int, where: str) -> int:
    """N of ``first:N`` (an integer) or of ``first:P%`` (``ceil(P * total / 100)``, as LLaVA-NeXT)."""
    try:
        if count.endswith("%"):
            percent = float(count[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return math.ceil(percent * total / 100)
        n = int(count)
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        raise ValueError(
            f"{where}: sampling count {count!r} is not valid; expected an integer >= 0 or a percentage in 0..100 "
            "such as '10%'"
        ) from None


def _load_mixture(path: Path, seed: int) -> list[dict]:
    """LLaVA-NeXT's YAML mixture: the subsets of each ``datasets`` entry, concatenated in order."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(
            f"{path}: invalid YAML ({exc}); expected 'datasets: [{{json_path, sampling_strategy}}]'"
        ) from None
    entries = spec.get("datasets") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f"{path}: no 'datasets' list; expected 'datasets: [{{json_path: ..., sampling_strategy: all}}, ...]'"
        )
    records: list[dict] = []
    for index, entry in enumerate(entries):
        where = f"{path}: datasets[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("json_path"), str):
            raise ValueError(f"{where} is {entry!r}; expected a mapping with a 'json_path' string")
        json_path = Path(os.path.expanduser(entry["json_path"]))
        if not json_path.is_absolute():
            json_path = path.parent / json_path
        if json_path.suffix.lower() not in (".json", ".jsonl"):
            raise ValueError(f"{where}: json_path {str(json_path)!r}; expected a .json or .jsonl file")
        name, count = _parse_strategy(entry.get("sampling_strategy", "all"), where)
        subset = _read_json_records(json_path)
        if name != "all":
            n = min(_sample_count(count, len(subset), where), len(subset))
            if name == "first":
                subset = subset[:n]
            elif name == "end":
                subset = subset[len(subset) - n :]
            else:  # random: a fixed subset for a given seed, entry and file
                subset = random.Random(f"{seed}:{index}:{entry['json_path']}").sample(subset, n)
        logger.info("%s: %d samples from %s (%s)", path, len(subset), json_path, entry.get("sampling_strategy", "all"))
        records.extend(subset)
    return records


def load_data_list(data_path: str | os.PathLike[str], *, seed: int = 0) -> list[dict]:
    """Read LLaVA training records from a ``.json`` list, a ``.jsonl`` file or a ``.yaml`` mixture.

    A YAML mixture lists ``datasets: [{json_path, sampling_strategy}]``; ``json_path`` is relative to
    the YAML's folder (or absolute); ``sampling_strategy`` is ``all`` (default), ``first:N``,
    ``end:N`` or ``random:N``, where N is a count or a percentage (``10%`` -> ``ceil(0.1 * len)``).
    ``random`` draws the same subset every time for a given ``seed``.

    Returns:
        The records in file order (mixture entries concatenated in order).

    Raises:
        FileNotFoundError: ``data_path`` or a mixture's ``json_path`` does not exist.
        ValueError: unknown suffix, invalid JSON/YAML, a YAML without ``datasets``, an unknown sampling
            strategy or count, or a record without a ``conversations`` list; the message names the file.
    """
    path = Path(os.path.expanduser(os.fspath(data_path)))
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"data mixture {str(path)!r} does not exist; expected a YAML file with 'datasets'")
        return _load_mixture(path, seed)
    return _read_json_records(path)


# ---------------------------------------------------------------------------------------------------
# tokenisation and labels
# ---------------------------------------------------------------------------------------------------
def _turns(conversations: Sequence[dict], system_message: str | None, sample_id: Any) -> list[tuple[str, str]]:
    """``[(role, text)]`` with ChatML roles, a leading system turn first; checks human/gpt alternation."""
    name = f"sample {sample_id!r}"
    turns: list[tuple[str, str]] = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise InvalidRecordError(
                "malformed turn", f"{name}: conversations[{index}] is {turn!r}; expected {{'from': ..., 'value': str}}"
            )
        source = turn.get("from")
        if source == "system":
            if index != 0:
                raise InvalidRecordError(
                    "system turn not first",
                    f"{name}: conversations[{index}] is a system turn; a system turn may only come first",
                )
            system_message = turn["value"]
            continue
        if source not in _ROLES:
            raise InvalidRecordError(
                "unknown role",
                f"{name}: conversations[{index}] has from={source!r}; expected 'human' or 'gpt' (or a leading 'system')"
            )
        role = _ROLES[source]
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise InvalidRecordError(
                "turns do not alternate",
                f"{name}: conversations[{index}] is a {source!r} turn where a "
                f"{'human' if expected == 'user' else 'gpt'!r} turn is expected; roles must alternate human, gpt, ..."
            )
        turns.append((role, turn["value"]))
    if not turns or turns[-1][0] != "assistant":
        raise InvalidRecordError(
            "no final gpt turn",
            f"{name}: the conversation does not end with a 'gpt' turn; expected human, gpt[, human, gpt ...]",
        )
    if system_message is not None:
        turns.insert(0, ("system", system_message))
    return turns


def _tokenize(text: str, tokenizer: Any, has_image: bool) -> list[int]:
    """Token ids of ``text``; with ``has_image`` each ``<image>`` becomes ``IMAGE_TOKEN_INDEX``."""
    if not has_image:
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    ids: list[int] = []
    for k, chunk in enumerate(text.split(DEFAULT_IMAGE_TOKEN)):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    return ids


def _truncate(
    input_ids: torch.Tensor, labels: torch.Tensor, max_len: int, sample_id: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first ``max_len`` positions, counting each placeholder as one, and every placeholder.

    Text tokens past the budget are dropped; a placeholder behind them is kept (the images stay
    matched with their placeholders). Warns with the sample id when anything is dropped.
    """
    n = input_ids.shape[0]
    if n <= max_len:
        return input_ids, labels
    is_placeholder = input_ids == IMAGE_TOKEN_INDEX
    placeholders = int(is_placeholder.sum())
    if placeholders > max_len:
        raise ValueError(
            f"sample {sample_id!r}: model_max_length={max_len} is smaller than its {placeholders} image placeholders"
        )
    text_rank = torch.cumsum(~is_placeholder, 0)  # (L,) 1-based position among text tokens
    keep = is_placeholder | (text_rank <= max_len - placeholders)
    input_ids, labels = input_ids[keep], labels[keep]
    supervised = int((labels != IGNORE_INDEX).sum())
    warnings.warn(
        f"sample {sample_id!r}: {n} tokens truncated to model_max_length={max_len} (image placeholders kept)"
        + ("; no supervised token is left" if supervised == 0 else ""),
        UserWarning,
        stacklevel=3,
    )
    return input_ids, labels


def preprocess_qwen(
    conversations: Sequence[dict],
    tokenizer: Any,
    *,
    has_image: bool,
    system_message: str | None = DEFAULT_SYSTEM_MESSAGE,
    max_len: int | None = None,
    sample_id: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise a LLaVA conversation in ChatML (``qwen_1_5``) with LLaVA-NeXT's training labels.

    Every turn is rendered ``<|im_start|>{role}\\n{text}<|im_end|>\\n`` (``human`` -> ``user``,
    ``gpt`` -> ``assistant``) after a system turn (``system_message``, replaced by a leading
    ``{"from": "system"}`` turn of the data; ``None`` and no such turn: no system turn). Labels are
    -100 on the system and user turns and equal to ``input_ids`` on the whole rendered assistant
    turns (role header and ``<|im_end|>\\n`` included). With ``has_image``, each ``<image>`` becomes
    one ``IMAGE_TOKEN_INDEX`` (-200) whose label is -100; without it ``<image>`` is plain text.

    Args:
        conversations: ``[{"from": "human" | "gpt" | "system", "value": str}, ...]``, alternating
            human, gpt, ... and ending with gpt.
        tokenizer: a Qwen2 tokenizer (``<|im_start|>`` / ``<|im_end|>`` special tokens, no BOS).
        has_image: split on ``<image>``.
        system_message: default system message.
        max_len: truncate to this many positions (a placeholder counts as one and is kept), with a warning.
        sample_id: named in error and warning messages.

    Returns:
        ``(input_ids, labels)``, both 1-D ``torch.long`` of length ``L``.

    Raises:
        ValueError: roles that do not alternate human/gpt, a system turn after the first, an unknown
            role, a turn without a string ``value``, or no final gpt turn; the message names ``sample_id``.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for role, text in _turns(conversations, system_message, sample_id):
        ids = _tokenize(f"<|im_start|>{role}\n{text}<|im_end|>\n", tokenizer, has_image)
        input_ids.extend(ids)
        labels.extend(ids if role == "assistant" else [IGNORE_INDEX] * len(ids))
    ids_t = torch.tensor(input_ids, dtype=torch.long)
    labels_t = torch.tensor(labels, dtype=torch.long)
    labels_t[ids_t == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    if max_len is not None:
        ids_t, labels_t = _truncate(ids_t, labels_t, int(max_len), sample_id)
    return ids_t, labels_t


# ---------------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------------
def _join(folder: str | os.PathLike[str] | None, path: str) -> str:
    return os.path.join(os.fspath(folder), path) if folder is not None else path


def _open_image(path: str) -> Image.Image:
    """RGB PIL image; a missing or undecodable file raises :class:`_MediaError`."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL reports broken files these ways
        raise _MediaError(path, exc) from exc


# ---------------------------------------------------------------------------------------------------
# record validation: the checks a record passes before training, shared with the draw-time path
# ---------------------------------------------------------------------------------------------------
def _record_visuals(record: dict, sample_id: Any, accepts_visual: bool) -> int:
    """Visual inputs of a record (1 for a video, one per image, 0 for text), its media fields checked."""
    name = f"sample {sample_id!r}"
    if "video" in record and "image" in record:
        raise InvalidRecordError("both video and image", f"{name} has both 'video' and 'image'; expected one of them")
    if "video" in record:
        if not isinstance(record["video"], str) or not record["video"]:
            raise InvalidRecordError("bad media path", f"{name}: video={record['video']!r}; expected a path string")
        n_visual = 1
    elif "image" in record:
        files = record["image"] if isinstance(record["image"], list) else [record["image"]]
        if not files or not all(isinstance(file, str) and file for file in files):
            raise InvalidRecordError(
                "bad media path",
                f"{name}: image={record['image']!r}; expected a path string or a non-empty list of them",
            )
        n_visual = len(files)
    else:
        return 0
    if not accepts_visual:
        raise InvalidRecordError(
            "visual input without image_processor", f"{name} has visual input but image_processor is None"
        )
    return n_visual


def _first_human_turn(conversations: Sequence[Any]) -> dict | None:
    return next((t for t in conversations if isinstance(t, dict) and t.get("from") in ("human", "user")), None)


def _needs_prepended_placeholders(conversations: Sequence[Any], n_visual: int, sample_id: Any) -> bool:
    """Whether ``<image>\\n`` is to be prepended (visual input, no ``<image>`` in the text, a human turn).

    Raises:
        InvalidRecordError: otherwise, the number of ``<image>`` differs from ``n_visual``.
    """
    count = sum(str(t.get("value", "")).count(DEFAULT_IMAGE_TOKEN) for t in conversations if isinstance(t, dict))
    if n_visual and count == 0:
        first = _first_human_turn(conversations)
        if first is not None and isinstance(first.get("value"), str):
            return True
    if count != n_visual:
        raise InvalidRecordError(
            "<image> count mismatch",
            f"sample {sample_id!r}: {count} <image> placeholder(s) in the conversation but {n_visual} "
            "visual input(s); expected one <image> per image (one for a video)",
        )
    return False


def _check_media_files(record: dict, sample_id: Any, image_folder: Any, video_folder: Any) -> None:
    """Every media file of a record exists (``os.path.isfile``); nothing is opened."""

    def shown(folder: Any) -> str | None:
        return None if folder is None else os.fspath(folder)

    if "video" in record:
        path = _join(video_folder, record["video"])
        if not os.path.isfile(path):
            raise InvalidRecordError(
                "missing video file",
                f"sample {sample_id!r}: video file {path!r} does not exist (video_folder={shown(video_folder)!r})",
            )
    elif "image" in record:
        for file in record["image"] if isinstance(record["image"], list) else [record["image"]]:
            path = _join(image_folder, file)
            if not os.path.isfile(path):
                raise InvalidRecordError(
                    "missing image file",
                    f"sample {sample_id!r}: image file {path!r} does not exist (image_folder={shown(image_folder)!r})",
                )


def validate_record(
    record: Any,
    *,
    sample_id: Any = None,
    image_folder: str | os.PathLike[str] | None = None,
    video_folder: str | os.PathLike[str] | None = None,
    accepts_visual: bool = True,
) -> None:
    """Check that a record can become a training sample, without reading its media.

    The checks, in the order of :data:`INVALID_REASONS`, are the ones the dataset applies when it
    draws a sample (the same functions): a non-empty ``conversations`` list of ``{"from", "value":
    str}`` turns alternating human, gpt, ... and ending with gpt (a leading system turn allowed); at
    most one of ``video`` / ``image``, each a path string (``image`` also a non-empty list of them);
    no visual input when ``accepts_visual`` is False (a dataset without an image processor); one
    ``<image>`` per image, one for a video, or none at all (the dataset then prepends them); every
    media file present under ``video_folder`` / ``image_folder`` (``os.path.isfile``, never decoded:
    a corrupt file is still skipped when drawn).

    Args:
        record: one record of :func:`load_data_list`.
        sample_id: named in the message (default: the record's ``id``).
        image_folder, video_folder: roots of the record's ``image`` / ``video`` paths.
        accepts_visual: whether records with a video or image are allowed.

    Raises:
        InvalidRecordError: the first check that fails; its ``reason`` is one of :data:`INVALID_REASONS`.
    """
    if sample_id is None and isinstance(record, dict):
        sample_id = record.get("id")
    conversations = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(conversations, list) or not conversations:
        raise InvalidRecordError(
            "no conversations",
            f"sample {sample_id!r} has no 'conversations' list; expected "
            '"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]',
        )
    _turns(conversations, None, sample_id)
    n_visual = _record_visuals(record, sample_id, accepts_visual)
    _needs_prepended_placeholders(conversations, n_visual, sample_id)
    _check_media_files(record, sample_id, image_folder, video_folder)


#: Ids named per reason in :meth:`RecordValidation.summary`.
_EXAMPLE_IDS = 3


@dataclass(frozen=True)
class RecordValidation:
    """What :func:`validate_records` kept and skipped.

    Attributes:
        data_path: where the records came from (named in the summary and in errors).
        total: records checked.
        records: the valid records, in file order.
        counts: reason -> number of records skipped for it, in :data:`INVALID_REASONS` order (only
            reasons that occurred).
        first_ids: reason -> ids of the first (at most 3) records skipped for it.
        first_messages: reason -> the error message of the first record skipped for it.
        skipped_ids: ids of every skipped record, in file order.
    """

    data_path: str
    total: int
    records: list[dict] = field(repr=False)
    counts: dict[str, int]
    first_ids: dict[str, list[Any]]
    first_messages: dict[str, str]
    skipped_ids: list[Any]

    @property
    def kept(self) -> int:
        return len(self.records)

    @property
    def skipped(self) -> int:
        return self.total - self.kept

    @property
    def invalid_fraction(self) -> float:
        """Skipped records over all records (0 for no records)."""
        return self.skipped / self.total if self.total else 0.0

    def summary(self) -> str:
        """``"{data_path}: validated N records: K kept, S skipped"``, then one line per reason with its
        count, its first ids and the first record's message."""
        lines = [f"{self.data_path}: validated {self.total} records: {self.kept} kept, {self.skipped} skipped"]
        for reason, count in self.counts.items():
            ids = ", ".join(repr(i) for i in self.first_ids[reason])
            lines.append(f"  {count} {reason} (first: {ids}); e.g. {self.first_messages[reason]}")
        return "\n".join(lines)

    def check(self, max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION) -> None:
        """Raise when there is no valid record, or more than ``max_invalid_fraction`` of them are invalid.

        Raises:
            ValueError: the message holds :meth:`summary`; a ``max_invalid_fraction`` outside [0, 1].
        """
        _check_fraction(max_invalid_fraction)
        if self.total == 0:
            raise ValueError(f"data_path {self.data_path!r} holds no samples; expected at least one record")
        if self.kept == 0:
            raise ValueError(f"{self.summary()}\nno record is valid; fix the data, or video_folder / image_folder")
        if self.invalid_fraction > max_invalid_fraction:
            raise ValueError(
                f"{self.summary()}\n{self.skipped} of {self.total} records ({self.invalid_fraction:.1%}) are invalid, "
                f"more than max_invalid_fraction={max_invalid_fraction}; fix the data (or video_folder / "
                f"image_folder), or raise --max_invalid_fraction to train on the {self.kept} valid ones"
            )


def _check_fraction(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"max_invalid_fraction={value!r}; expected a fraction in [0, 1]")


def validate_records(
    records: Sequence[dict],
    *,
    data_path: str | os.PathLike[str] = "<records>",
    image_folder: str | os.PathLike[str] | None = None,
    video_folder: str | os.PathLike[str] | None = None,
    accepts_visual: bool = True,
) -> RecordValidation:
    """:func:`validate_record` on every record: the valid ones and what was skipped, and why.

    A record without an ``id`` is named ``#index`` (its position), as the dataset names it.
    """
    kept: list[dict] = []
    counts: dict[str, int] = {}
    first_ids: dict[str, list[Any]] = {}
    first_messages: dict[str, str] = {}
    skipped_ids: list[Any] = []
    for index, record in enumerate(records):
        sample_id = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
        try:
            validate_record(record, sample_id=sample_id, image_folder=image_folder, video_folder=video_folder,
                            accepts_visual=accepts_visual)
        except InvalidRecordError as exc:
            counts[exc.reason] = counts.get(exc.reason, 0) + 1
            examples = first_ids.setdefault(exc.reason, [])
            if len(examples) < _EXAMPLE_IDS:
                examples.append(sample_id)
            first_messages.setdefault(exc.reason, str(exc))
            skipped_ids.append(sample_id)
            continue
        kept.append(record)
    order = {reason: k for k, reason in enumerate(INVALID_REASONS)}
    counts = dict(sorted(counts.items(), key=lambda item: order[item[0]]))
    return RecordValidation(os.fspath(data_path), len(records), kept, counts, first_ids, first_messages, skipped_ids)


def _is_main_process() -> bool:
    """Rank 0 of the process group, or of the launcher's ``RANK`` / ``LOCAL_RANK`` before one exists."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def load_valid_records(
    data_path: str | os.PathLike[str],
    *,
    image_folder: str | os.PathLike[str] | None = None,
    video_folder: str | os.PathLike[str] | None = None,
    accepts_visual: bool = True,
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION,
    seed: int = 0,
) -> RecordValidation:
    """Read the records of ``data_path`` (:func:`load_data_list`) and validate every one of them.

    The summary (:meth:`RecordValidation.summary`) is logged once, by rank 0 only, as a warning when
    records are skipped (else at INFO).

    Raises:
        ValueError: no record, no valid record, or more than ``max_invalid_fraction`` of them invalid
            (:meth:`RecordValidation.check`); and what :func:`load_data_list` raises.
        FileNotFoundError: ``data_path`` does not exist.
    """
    _check_fraction(max_invalid_fraction)
    records = load_data_list(data_path, seed=seed)
    validation = validate_records(records, data_path=data_path, image_folder=image_folder, video_folder=video_folder,
                                  accepts_visual=accepts_visual)
    validation.check(max_invalid_fraction)
    if _is_main_process():
        logger.log(logging.WARNING if validation.skipped else logging.INFO, "%s", validation.summary())
    return validation


class SupervisedDataset(torch.utils.data.Dataset):
    """LLaVA-NeXT's lazy supervised dataset for video, image and text-only samples.

    Args:
        data_path: ``.json`` / ``.jsonl`` / ``.yaml`` mixture (see :func:`load_data_list`).
        tokenizer: Qwen2 tokenizer.
        image_processor: ``preprocess(images, return_tensors="pt") -> {"pixel_values"}`` (SigLIP's);
            may be ``None`` for text-only data.
        model_config: model config, read by :func:`llava.mm_utils.process_images` (``image_aspect_ratio``,
            ``image_grid_pinpoints``).
        image_folder, video_folder: roots of the records' ``image`` / ``video`` paths.
        frames_upbound: most frames per video (LLaVA-Video 64, OV 32).
        video_fps: rate of the fps sampler (frames per second).
        force_sample: always sample ``frames_upbound`` frames uniformly.
        min_frames: fewest frames a video may give; a short video whose fps sampling gives fewer is
            sampled uniformly to ``min_frames`` instead (frames repeat when the file has fewer), with
            a log line. ``train.py`` sets it to AOT's ``num_clips`` when the inter-frame stage is on.
        add_time_instruction: put LLaVA-Video's time instruction in the first human turn.
        model_max_length: truncate sequences to this many positions (placeholders kept, counted once).
        max_retries: how many following samples may replace a sample whose media is bad.
        validation: ``True``: every record is validated here (:func:`load_valid_records`, with
            ``accepts_visual`` = an image processor is given) and the invalid ones are dropped before
            any index, length or sampler sees them; a :class:`RecordValidation` of ``data_path`` from an
            earlier :func:`load_valid_records` (``train.py`` validates before the model loads): its
            records are used; ``False``: every record is kept and checked only when drawn.
        max_invalid_fraction: with ``validation=True``, the largest fraction of invalid records
            tolerated (:meth:`RecordValidation.check`).
        system_message: system turn of every sample without its own (see :func:`preprocess_qwen`).
        seed: seed of ``random:N`` mixture entries.

    ``dataset[i]`` is ``{"input_ids": (L,) long, "labels": (L,) long, "images": [tensor per <image>],
    "modalities": ["video" | "image", ...], "image_sizes": [(width, height), ...], "id": record id,
    "skipped": int}``; a video is one ``(F, 3, H, W)`` tensor, an image one ``(P, 3, H, W)`` tensor
    (anyres: overview + grid patches; several images in one sample are padded to a square, ``P = 1``,
    as LLaVA-NeXT does). ``skipped`` counts the samples with bad media passed over to produce the
    item; ``skipped_ids`` and ``prepended_image_token`` are kept per process (each DataLoader worker
    has its own copy). ``validation`` is the :class:`RecordValidation` of the records (``None`` with
    ``validation=False``). A record that passed validation can still fail when drawn: its media may
    not decode (skipped, as above) or be gone by then.
    """

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        tokenizer: Any,
        image_processor: Any,
        *,
        model_config: Any,
        image_folder: str | os.PathLike[str] | None = None,
        video_folder: str | os.PathLike[str] | None = None,
        frames_upbound: int = 32,
        video_fps: float = 1,
        force_sample: bool = False,
        min_frames: int = 1,
        add_time_instruction: bool = False,
        model_max_length: int | None = None,
        max_retries: int = 10,
        system_message: str | None = DEFAULT_SYSTEM_MESSAGE,
        seed: int = 0,
        validation: RecordValidation | bool = True,
        max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION,
    ):
        if int(frames_upbound) != frames_upbound or frames_upbound < 1:
            raise ValueError(f"frames_upbound={frames_upbound!r}; expected an integer >= 1")
        if int(min_frames) != min_frames or not 1 <= min_frames <= frames_upbound:
            raise ValueError(f"min_frames={min_frames!r}; expected an integer from 1 to "
                             f"frames_upbound={frames_upbound}")
        if not video_fps > 0:
            raise ValueError(f"video_fps={video_fps!r}; expected a rate > 0")
        if model_max_length is not None and model_max_length < 1:
            raise ValueError(f"model_max_length={model_max_length!r}; expected an integer >= 1 or None")
        if int(max_retries) != max_retries or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r}; expected an integer >= 0")
        self.data_path = os.fspath(data_path)
        if validation is True:
            validation = load_valid_records(
                data_path, image_folder=image_folder, video_folder=video_folder,
                accepts_visual=image_processor is not None, max_invalid_fraction=max_invalid_fraction, seed=seed,
            )
        elif isinstance(validation, RecordValidation):
            if validation.data_path != self.data_path:
                raise ValueError(f"validation of data_path {validation.data_path!r} given for data_path "
                                 f"{self.data_path!r}; expected the validation of the same data")
        elif validation is not False:
            raise ValueError(f"validation={validation!r}; expected True, False or a RecordValidation")
        #: the RecordValidation of the records, None when they were not validated up front.
        self.validation: RecordValidation | None = validation or None
        self.list_data_dict = list(validation.records) if validation else load_data_list(data_path, seed=seed)
        if not self.list_data_dict:
            raise ValueError(f"data_path {self.data_path!r} holds no samples; expected at least one record")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_config = model_config
        self.image_folder = image_folder
        self.video_folder = video_folder
        self.frames_upbound = int(frames_upbound)
        self.video_fps = video_fps
        self.force_sample = force_sample
        self.min_frames = int(min_frames)
        self.add_time_instruction = add_time_instruction
        self.model_max_length = model_max_length
        self.max_retries = int(max_retries)
        self.system_message = system_message
        #: ids of the samples skipped for bad media, in the order they were met (this process only).
        self.skipped_ids: list[Any] = []
        self._prepended_ids: set[Any] = set()
        self._lengths: list[int] | None = None
        self._modality_lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.list_data_dict)

    @property
    def prepended_image_token(self) -> int:
        """How many distinct samples got ``<image>\\n`` prepended to their first human turn (this process)."""
        return len(self._prepended_ids)

    def _text_words(self, record: dict) -> int:
        return sum(len(str(turn.get("value", "")).split()) for turn in record["conversations"])

    @property
    def lengths(self) -> list[int]:
        """Approximate length per sample, as LLaVA-NeXT: words, plus 128 when it has an image or video."""
        if self._lengths is None:
            self._lengths = [
                self._text_words(r) + (128 if "image" in r or "video" in r else 0) for r in self.list_data_dict
            ]
        return self._lengths

    @property
    def modality_lengths(self) -> list[int]:
        """Words per sample (at least 1), positive for video/image samples, negative for text-only ones."""
        if self._modality_lengths is None:
            self._modality_lengths = [
                max(self._text_words(r), 1) * (1 if "image" in r or "video" in r else -1) for r in self.list_data_dict
            ]
        return self._modality_lengths

    # -- one sample
    def _sample_id(self, index: int) -> Any:
        record = self.list_data_dict[index]
        return record.get("id", f"#{index}")

    def _conversations(self, record: dict, sample_id: Any, n_visual: int) -> list[dict]:
        """A copy of the record's turns with the placeholders checked (and added when there are none)."""
        conversations = [dict(turn) if isinstance(turn, dict) else turn for turn in record["conversations"]]
        if _needs_prepended_placeholders(conversations, n_visual, sample_id):
            first = _first_human_turn(conversations)
            first["value"] = (DEFAULT_IMAGE_TOKEN + "\n") * n_visual + first["value"]
            if sample_id not in self._prepended_ids:
                level = logging.WARNING if not self._prepended_ids else logging.INFO
                self._prepended_ids.add(sample_id)
                logger.log(
                    level,
                    "sample %r has %d visual input(s) but no <image> in its text: prepended %r to the first "
                    "human turn",
                    sample_id,
                    n_visual,
                    DEFAULT_IMAGE_TOKEN + "\n",
                )
        return conversations

    def _load_video(self, record: dict) -> tuple[torch.Tensor, tuple[int, int], Any]:
        """``(pixels (F, 3, H, W), (width, height), clip)``; a bad file raises :class:`_MediaError`."""
        path = _join(self.video_folder, record["video"])
        try:
            clip = load_video(
                path, max_frames=self.frames_upbound, mode="fps", force_sample=self.force_sample,
                target_fps=self.video_fps,
            )
            if clip.num_frames < self.min_frames:
                logger.info("sample %r: %d frame(s) at %g fps, fewer than %d; sampling %d frames uniformly",
                            record.get("id"), clip.num_frames, self.video_fps, self.min_frames, self.min_frames)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # frames repeat on purpose when the file is that short
                    clip = load_video(path, max_frames=self.min_frames, mode="uniform")
        except (OSError, VideoDecodeError) as exc:  # missing file, folder, unreadable or undecodable video
            raise _MediaError(path, exc) from exc
        pixels = self.image_processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]  # (F, 3, H, W)
        height, width = clip.frames.shape[1:3]
        return pixels, (int(width), int(height)), clip

    def _load_images(self, record: dict) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """One ``(P, 3, H, W)`` or ``(3, H, W)`` tensor and one ``(width, height)`` per image file."""
        files = record["image"] if isinstance(record["image"], list) else [record["image"]]
        # LLaVA-NeXT processes a single image per the model's image_aspect_ratio (anyres) and the
        # images of a multi-image sample with plain padding to a square.
        config = self.model_config if len(files) == 1 else {"image_aspect_ratio": "pad"}
        tensors, sizes = [], []
        for file in files:
            img = _open_image(_join(self.image_folder, file))
            processed = process_images([img], self.image_processor, config)
            tensors.append(processed[0])  # (P, 3, H, W) anyres, (3, H, W) otherwise
            sizes.append(img.size)
        return tensors, sizes

    def _get_item(self, index: int) -> dict:
        record = self.list_data_dict[index]
        sample_id = self._sample_id(index)
        n_visual = _record_visuals(record, sample_id, accepts_visual=self.image_processor is not None)
        conversations = self._conversations(record, sample_id, n_visual)

        images: list[torch.Tensor] = []
        sizes: list[tuple[int, int]] = []
        modalities: list[str] = []
        if "video" in record:
            pixels, size, clip = self._load_video(record)
            images, sizes, modalities = [pixels], [size], ["video"]
            if self.add_time_instruction:
                first = next(t for t in conversations if t.get("from") in ("human", "user"))
                question = first["value"].replace(DEFAULT_IMAGE_TOKEN + "\n", "").replace(DEFAULT_IMAGE_TOKEN, "")
                first["value"] = f"{DEFAULT_IMAGE_TOKEN}\n{clip.time_instruction()}\n{question}"
        elif "image" in record:
            images, sizes = self._load_images(record)
            modalities = ["image"] * len(images)

        input_ids, labels = preprocess_qwen(
            conversations, self.tokenizer, has_image=n_visual > 0, system_message=self.system_message,
            max_len=self.model_max_length, sample_id=sample_id,
        )
        return {"input_ids": input_ids, "labels": labels, "images": images, "modalities": modalities,
                "image_sizes": sizes, "id": sample_id}

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} samples")
        i %= n
        tried = []
        for attempt in range(min(self.max_retries + 1, n)):
            index = (i + attempt) % n
            try:
                item = self._get_item(index)
            except _MediaError as exc:
                sample_id = self._sample_id(index)
                tried.append(sample_id)
                self.skipped_ids.append(sample_id)
                warnings.warn(f"skipping sample {sample_id!r}: cannot load {exc}", SkippedSampleWarning, stacklevel=2)
                continue
            item["skipped"] = attempt
            return item
        raise RuntimeError(
            f"samples {tried} (from index {i}) all have missing or undecodable media; gave up after {len(tried)} "
            f"tries (max_retries={self.max_retries}, {n} samples); check video_folder={self.video_folder!r} / "
            f"image_folder={self.image_folder!r}"
        )


# ---------------------------------------------------------------------------------------------------
# collator
# ---------------------------------------------------------------------------------------------------
@dataclass
class DataCollatorForSupervisedDataset:
    """Right-pad a list of :class:`SupervisedDataset` items into a batch the model's forward takes.

    Returns ``{"input_ids": (B, L) long (padded with pad_token_id), "labels": (B, L) long (padded with
    -100), "attention_mask": (B, L) long, "images": [tensor, ...] (left out when the batch has none),
    "modalities": [...], "image_sizes": [...], "skipped_samples": () long}`` with images, modalities
    and image sizes concatenated over the batch in order. ``skipped_samples`` (samples passed over for
    bad media) must be popped before the batch is given to the model.

    Args:
        tokenizer: gives ``pad_token_id``.
        model_max_length: truncate each sequence to this many positions (placeholders kept); ``None``:
            no truncation here.
    """

    tokenizer: Any
    model_max_length: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad_token_id; expected one (Qwen2: <|endoftext|>, id 151643)")
        if self.model_max_length is not None and self.model_max_length < 1:
            raise ValueError(f"model_max_length={self.model_max_length!r}; expected an integer >= 1 or None")

    def __call__(self, instances: Sequence[dict]) -> dict[str, Any]:
        if not instances:
            raise ValueError("cannot collate an empty list of samples")
        ids_list, labels_list = [], []
        for inst in instances:
            ids, labels = inst["input_ids"], inst["labels"]
            sample_id = inst.get("id")
            if ids.shape != labels.shape:
                raise ValueError(
                    f"sample {sample_id!r}: input_ids {tuple(ids.shape)} and labels {tuple(labels.shape)} differ"
                )
            placeholders = int((ids == IMAGE_TOKEN_INDEX).sum())
            if placeholders != len(inst.get("images", [])):
                raise ValueError(
                    f"sample {sample_id!r}: {placeholders} image placeholder(s) but {len(inst.get('images', []))} "
                    "image tensor(s); expected one per placeholder"
                )
            if self.model_max_length is not None:
                ids, labels = _truncate(ids, labels, self.model_max_length, sample_id)
            ids_list.append(ids)
            labels_list.append(labels)
        longest = max(x.shape[0] for x in ids_list)
        batch_size = len(ids_list)
        input_ids = torch.full((batch_size, longest), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, longest), dtype=torch.long)
        for row, (ids, lab) in enumerate(zip(ids_list, labels_list)):
            n = ids.shape[0]
            input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = ids, lab, 1
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [img for inst in instances for img in inst.get("images", [])]
        if images:
            batch["images"] = images
        batch["modalities"] = [m for inst in instances for m in inst.get("modalities", [])]
        batch["image_sizes"] = [s for inst in instances for s in inst.get("image_sizes", [])]
        batch["skipped_samples"] = torch.tensor(sum(int(inst.get("skipped", 0)) for inst in instances))
        return batch

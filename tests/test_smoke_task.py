"""The offline lmms-eval task ``aot_smoke_mcq`` (``lmms_eval_tasks/aot_smoke``), loaded through
lmms-eval's own TaskManager, and its bundled videos. Skipped where lmms-eval is not installed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lmms_eval")

import lmms_eval  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.api.metrics import mean  # noqa: E402
from lmms_eval.api.model import lmms  # noqa: E402
from lmms_eval.evaluator import evaluate  # noqa: E402
from lmms_eval.tasks import TaskManager, get_task_dict  # noqa: E402
from lmms_files import load_module  # noqa: E402 - tests/lmms_files.py

from llava.video import load_video, synthetic_frame  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "lmms_eval_tasks"
TASK_DIR = TASKS_DIR / "aot_smoke"
TASK = "aot_smoke_mcq"
POST_PROMPT = "Answer with the option's letter from the given choices directly."


utils = load_module("aot_smoke_utils", TASK_DIR / "utils.py")
make_videos = load_module("aot_smoke_make_videos", TASK_DIR / "make_videos.py")
DOCS = [json.loads(line) for line in (TASK_DIR / "data.jsonl").read_text().splitlines() if line.strip()]
VIDEO_NAMES = sorted([*make_videos.VIDEOS, make_videos.SCENE_CUT_VIDEO])


@pytest.fixture(scope="module")
def manager():
    """Only the repository's tasks: indexing lmms-eval's ~2000 built-in YAMLs takes seconds."""
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@pytest.fixture(scope="module")
def task(manager, tmp_path_factory):
    """The task as lmms-eval builds it, from another working directory and with a private datasets cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets_cache")))
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))
        task_dict = get_task_dict([TASK], manager)
    assert list(task_dict) == [TASK]
    return task_dict[TASK]


# ---------------------------------------------------------------------------------------------------
# registration and configuration
# ---------------------------------------------------------------------------------------------------
def test_task_is_registered_from_the_include_path(manager):
    entry = manager.task_index[TASK]
    assert entry["type"] == "task"
    assert Path(entry["yaml_path"]).resolve() == TASK_DIR / "aot_smoke_mcq.yaml"


def test_task_name_is_not_a_builtin():
    # TaskManager indexes tasks, groups and tags from YAML only, so a built-in of this name would
    # have to spell it in a YAML file (some templates have no .yaml suffix)
    builtin_dir = Path(lmms_eval.__file__).parent / "tasks"
    pattern = re.compile(rf"(?<![\w-]){re.escape(TASK)}(?![\w-])")
    yaml_files = [p for p in builtin_dir.rglob("*") if "yaml" in p.name and p.is_file()]
    assert len(yaml_files) > 100, "lmms-eval's built-in task folder was not found"
    clashes = [str(p) for p in yaml_files if pattern.search(p.read_text(errors="ignore"))]
    assert clashes == []


def test_task_config(task):
    assert task.OUTPUT_TYPE == "generate_until"
    assert task.config.test_split == "test"
    # lmms-eval rewrites the relative data_files entry against the YAML's folder, whatever the cwd
    assert task.config.dataset_kwargs["data_files"] == {"test": str(TASK_DIR / "data.jsonl")}
    expected_gen = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
    assert expected_gen.items() <= task.config.generation_kwargs.items()
    assert task.aggregation() == {"acc": mean}
    assert task.higher_is_better() == {"acc": True}


def test_docs_come_from_data_jsonl(task):
    docs = list(task.test_docs())
    assert [dict(doc) for doc in docs] == DOCS
    assert [task.doc_to_target(doc) for doc in docs] == [doc["answer"] for doc in DOCS]


# ---------------------------------------------------------------------------------------------------
# data and videos
# ---------------------------------------------------------------------------------------------------
def test_data_is_consistent():
    assert 6 <= len(DOCS) <= 8
    assert len({doc["id"] for doc in DOCS}) == len(DOCS)
    for doc in DOCS:
        assert set(doc) == {"id", "video", "question", "candidates", "answer"}, doc["id"]
        assert len(set(doc["candidates"])) == len(doc["candidates"]) >= 2, doc["id"]
        assert doc["answer"] in "ABCDEFGH"[: len(doc["candidates"])], doc["id"]
    assert {doc["video"] for doc in DOCS} == set(VIDEO_NAMES)
    assert sorted(p.name for p in TASK_DIR.glob("*.mp4")) == VIDEO_NAMES


def test_answers_are_spread_over_letters():
    assert len({doc["answer"] for doc in DOCS}) >= 2
    assert len({doc["answer"] for doc in DOCS[:4]}) >= 2  # the smoke run uses --limit 4


def _direction(square) -> str:
    (x0, y0), (x1, y1) = square.start, square.end
    if y0 == y1:
        return "from left to right" if x1 > x0 else "from right to left"
    assert x0 == x1, "the questions only cover horizontal or vertical motion"
    return "downwards" if y1 > y0 else "upwards"


def test_answers_match_the_videos():
    for doc in DOCS:
        correct = doc["candidates"]["ABCDEFGH".index(doc["answer"])]
        squares = make_videos.VIDEOS.get(doc["video"])
        if doc["question"] == "Which colour is the moving square?":
            assert len(squares) == 1 and correct == squares[0].colour, doc["id"]
        elif doc["question"] == "In which direction does the square move?":
            assert len(squares) == 1 and correct == _direction(squares[0]), doc["id"]
        elif doc["question"] == "How many squares move in the video?":
            assert correct == ["one", "two", "three", "four"][len(squares) - 1], doc["id"]
        else:
            assert doc["video"] == make_videos.SCENE_CUT_VIDEO, doc["id"]
            assert correct == "The background colours change", doc["id"]


def test_videos_are_small():
    total = sum((TASK_DIR / name).stat().st_size for name in VIDEO_NAMES)
    assert 4 <= len(VIDEO_NAMES) <= 6
    assert total < 200_000, f"bundled videos take {total} bytes"


@pytest.mark.parametrize("name", sorted(make_videos.VIDEOS))
def test_square_video_decodes_to_its_frames(name):
    clip = load_video(TASK_DIR / name, max_frames=8)
    assert clip.frames.shape == (8, make_videos.SIZE, make_videos.SIZE, 3)
    assert clip.total_frames == make_videos.FRAMES
    inner = make_videos.SIDE // 2 - 4  # half-width of the square's core, away from chroma bleeding
    for frame, index in zip(clip.frames, clip.indices):
        for square in make_videos.VIDEOS[name]:
            x, y = (c + make_videos.SIDE // 2 for c in make_videos.square_position(square, index))  # centre
            core = frame[y - inner : y + inner, x - inner : x + inner].reshape(-1, 3).astype(float)
            error = np.abs(core.mean(0) - make_videos.COLOURS[square.colour]).max()
            assert error < 20, f"{name} frame {index}: {square.colour} square centred at ({x}, {y}) off by {error:.0f}"
        corner = frame[: make_videos.SIDE // 4, -make_videos.SIDE // 4 :].reshape(-1, 3).astype(float)
        if name != "two_squares.mp4":  # its red square passes the top-right corner
            assert np.abs(corner.mean(0) - make_videos.BACKGROUND).max() < 10, f"{name} frame {index}: background"


def test_scene_cut_video_decodes_to_its_frames():
    clip = load_video(TASK_DIR / make_videos.SCENE_CUT_VIDEO, max_frames=8)
    assert clip.total_frames == make_videos.FRAMES
    size = (make_videos.SIZE, make_videos.SIZE)
    for frame, index in zip(clip.frames, clip.indices):
        expected = synthetic_frame(index, frames=make_videos.FRAMES, size=size, seed=0)
        assert np.abs(frame.astype(float) - expected).mean() < 6, f"frame {index}"


def test_doc_to_visual_is_absolute_and_decodes(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for doc in task.test_docs():
        paths = task.doc_to_visual(doc)
        assert paths == [str(TASK_DIR / doc["video"])]
        assert load_video(paths[0], max_frames=8).frames.shape[0] == 8


def test_doc_to_visual_names_a_missing_video():
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4.*make_videos\.py"):
        utils.doc_to_visual({"id": "x", "video": "nope.mp4"})


# ---------------------------------------------------------------------------------------------------
# prompt and scoring
# ---------------------------------------------------------------------------------------------------
def test_prompt_of_first_doc(task):
    expected = (
        "Which colour is the moving square?\n"
        "(A) red\n"
        "(B) green\n"
        "(C) blue\n"
        "(D) yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert task.doc_to_text(task.test_docs()[0]) == expected
    assert utils.doc_to_text(DOCS[0], {"pre_prompt": "", "post_prompt": POST_PROMPT}) == expected


def test_prompt_without_task_kwargs():
    assert utils.doc_to_text(DOCS[6]) == "How many squares move in the video?\n(A) one\n(B) two\n(C) three\n(D) four\n"
    with_pre = utils.doc_to_text(DOCS[6], {"pre_prompt": "Watch.\n", "post_prompt": "Go."})
    assert with_pre.startswith("Watch.\nHow many") and with_pre.endswith("(D) four\nGo.")


# DOCS[2] has four options and answer "B"
@pytest.mark.parametrize(
    ("answer", "acc"),
    [
        ("B", 1.0),
        ("b", 1.0),
        ("(B)", 1.0),
        ("(b)", 1.0),
        (" B.\n", 1.0),
        ("B. green", 1.0),
        ("(B) green", 1.0),
        ("The answer is B.", 1.0),
        ("I think (B)", 1.0),  # "I" is not one of the four option letters
        ("A", 0.0),
        ("(C)", 0.0),
        ("d", 0.0),
        ("C, not B", 0.0),  # the first option letter counts
        ("", 0.0),
        ("   ", 0.0),
        ("green", 0.0),  # no letter
        ("a green square", 0.0),  # a lower-case article is not an option letter
        ("E", 0.0),  # not an option of this doc
        ("BB", 0.0),
    ],
)
def test_process_results(task, answer, acc):
    assert task.process_results(DOCS[2], [answer]) == {"acc": acc}


def test_lower_case_article_is_not_option_a():
    assert DOCS[0]["answer"] == "A"
    assert utils.process_results(DOCS[0], ["a red square"]) == {"acc": 0.0}
    assert utils.process_results(DOCS[0], ["a"]) == {"acc": 1.0}


def test_process_results_without_a_response():
    assert utils.process_results(DOCS[2], []) == {"acc": 0.0}
    assert utils.process_results(DOCS[2], [None]) == {"acc": 0.0}


def test_bad_docs_are_named():
    with pytest.raises(ValueError, match=r"'bad'.*'answer' must be one of \['A', 'B'\], got 'C'"):
        utils.process_results({"id": "bad", "candidates": ["x", "y"], "answer": "C"}, ["C"])
    with pytest.raises(ValueError, match=r"'bad'.*2 to 26 options, got 1"):
        utils.doc_to_text({"id": "bad", "question": "q", "candidates": ["x"], "answer": "A"})


# ---------------------------------------------------------------------------------------------------
# end to end through lmms-eval's evaluator
# ---------------------------------------------------------------------------------------------------
class _ScriptedModel(lmms):
    """Answers each request from a table keyed by the doc id; records what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers
        self.accelerator = None  # single process: keeps evaluate() from creating a global Accelerator
        self.seen: list[tuple[str, list[str], dict]] = []

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task_name, split = request.args
            doc = self.task_dict[task_name][split][doc_id]
            self.seen.append((context, doc_to_visual(doc), gen_kwargs))
            out.append(self.answers[doc["id"]])
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("aot_smoke_mcq only sends generate_until requests")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("aot_smoke_mcq only sends generate_until requests")


def test_evaluator_reports_acc(task):
    # right on the first two docs, wrong on the next two: acc 0.5 over --limit 4
    answers = {doc["id"]: doc["answer"] if i < 2 else "no idea" for i, doc in enumerate(DOCS)}
    model = _ScriptedModel(answers)
    model.task_dict = {TASK: task.dataset}
    results = evaluate(model, {TASK: task}, limit=4, bootstrap_iters=0, log_samples=False, process_docs_parallel=1)
    assert results["results"][TASK]["acc,none"] == pytest.approx(0.5)
    assert len(model.seen) == 4
    context, visuals, gen_kwargs = model.seen[0]
    assert context == task.doc_to_text(DOCS[0]) and visuals == [str(TASK_DIR / "red_right.mp4")]
    assert gen_kwargs["max_new_tokens"] == 16 and gen_kwargs["do_sample"] is False

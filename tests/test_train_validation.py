"""Every training record validated before the first step: the checks per reason, the one summary, the
``--max_invalid_fraction`` threshold, and training runs (in process and through ``python -m
llava.train.train``) that drop the bad records up front and never draw them."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.model.builder import load_pretrained_model
from llava.train import data as train_data
from llava.train.arguments import parse_args
from llava.train.data import (
    DEFAULT_MAX_INVALID_FRACTION,
    INVALID_REASONS,
    InvalidRecordError,
    SupervisedDataset,
    load_valid_records,
    validate_record,
    validate_records,
)
from llava.video import write_synthetic_video

ROOT = Path(__file__).resolve().parents[1]
TINY_CPU = ROOT / "configs" / "train" / "tiny_cpu.yaml"


def _conv(*texts, roles=("human", "gpt")):
    return [{"from": roles[k % 2], "value": t} for k, t in enumerate(texts)]


def _video(sample_id, video="v0.mp4", question="<image>\nWhat moves?"):
    return {"id": sample_id, "video": video, "conversations": _conv(question, "A square.")}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Three short videos (8 s at 8 fps: 8 frames at 1 fps) and two images."""
    root = tmp_path_factory.mktemp("media")
    for i in range(3):
        write_synthetic_video(root / f"v{i}.mp4", frames=64, size=(48, 64), fps=8, seed=i)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "a.png")
    Image.new("RGB", (30, 40), (200, 10, 30)).save(root / "b.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _write(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


# --------------------------------------------------------------------------- one record, each reason
BAD = {
    "no conversations": {"id": "r", "conversations": []},
    "malformed turn": {"id": "r", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "A"}]},
    "unknown role": {"id": "r", "conversations": _conv("Q", "A", roles=("human", "bot"))},
    "system turn not first": {"id": "r", "conversations": _conv("Q", "A") + [{"from": "system", "value": "S"}]},
    "turns do not alternate": {"id": "r", "conversations": _conv("Q", "Q2", "A", roles=("human", "human"))},
    "no final gpt turn": {"id": "r", "conversations": _conv("Q")},
    "both video and image": dict(_video("r"), image="a.png"),
    "bad media path": {"id": "r", "image": [], "conversations": _conv("Q", "A")},
    "<image> count mismatch": _video("r", question="<image>\n<image>\nWhat moves?"),
    "missing video file": _video("r", video="gone.mp4"),
    "missing image file": {"id": "r", "image": ["a.png", "gone.png"],
                           "conversations": _conv("<image>\n<image>\nQ", "A")},
}
MORE_BAD = [
    ("bad media path", {"id": "r", "video": 5, "conversations": _conv("<image>\nQ", "A")}),
    ("<image> count mismatch", {"id": "r", "conversations": _conv("<image>\nQ", "A")}),  # text-only with <image>
    ("<image> count mismatch", {"id": "r", "image": ["a.png", "b.png"], "conversations": _conv("<image>\nQ", "A")}),
]
GOOD = {
    "video": _video("g"),
    "video without <image> (prepended when drawn)": _video("g", question="What moves?"),
    "two images": {"id": "g", "image": ["a.png", "b.png"], "conversations": _conv("<image>\n<image>\nQ", "A")},
    "text with a system turn": {"id": "g", "conversations": [{"from": "system", "value": "S"}] + _conv("Q", "A")},
    "two rounds": {"id": "g", "image": "a.png", "conversations": _conv("<image>\nQ", "A", "Q2", "A2")},
}


def test_every_reason_is_exercised():
    assert set(BAD) | {"visual input without image_processor"} == set(INVALID_REASONS)


@pytest.mark.parametrize(("reason", "record"), [*BAD.items(), *MORE_BAD], ids=[*BAD, "video 5", "text", "images"])
def test_each_reason(media, reason, record):
    with pytest.raises(InvalidRecordError, match=r"sample 'r'") as exc:
        validate_record(record, image_folder=media, video_folder=media)
    assert exc.value.reason == reason and isinstance(exc.value, ValueError)
    report = validate_records([record, _video("ok")], data_path="d.json", image_folder=media, video_folder=media)
    assert report.counts == {reason: 1} and report.first_ids == {reason: ["r"]} and report.skipped_ids == ["r"]
    assert [r["id"] for r in report.records] == ["ok"] and report.invalid_fraction == 0.5
    assert f"1 {reason} (first: 'r'); e.g. {exc.value}" in report.summary()


def test_visual_input_without_image_processor(media):
    with pytest.raises(InvalidRecordError, match=r"sample 'g' has visual input but image_processor is None") as exc:
        validate_record(_video("g"), video_folder=media, accepts_visual=False)
    assert exc.value.reason == "visual input without image_processor"
    validate_record(GOOD["text with a system turn"], accepts_visual=False)


@pytest.mark.parametrize("record", GOOD.values(), ids=GOOD)
def test_good_records_pass(media, record):
    validate_record(record, image_folder=media, video_folder=media)


def test_missing_file_names_the_path_and_folder(media):
    message = f"'{media / 'gone.mp4'}' does not exist (video_folder='{media}')"
    with pytest.raises(InvalidRecordError, match=re.escape(message)):
        validate_record(BAD["missing video file"], video_folder=media)


def test_validation_does_not_decode_media(media, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation decoded a media file")

    monkeypatch.setattr(train_data, "load_video", refuse)
    monkeypatch.setattr(train_data, "_open_image", refuse)
    monkeypatch.setattr(train_data.Image, "open", refuse)
    records = [_video("v"), GOOD["two images"], GOOD["two rounds"]]
    report = validate_records(records, image_folder=media, video_folder=media)
    assert report.kept == 3 and report.counts == {}


def test_draw_time_path_raises_the_same_errors(media, tiny, tmp_path):
    """The dataset's draw-time checks (validation=False) are the ones validation runs: same messages."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer, model, processor, _ = load_pretrained_model(str(tiny), None, "llava_qwen", device_map=None,
                                                               torch_dtype="float32")
    reasons = ["unknown role", "turns do not alternate", "no final gpt turn", "both video and image",
               "<image> count mismatch", "bad media path"]
    records = [dict(BAD[reason], id=reason) for reason in reasons]
    data = _write(tmp_path / "d.json", records)
    report = validate_records(records, data_path=data, image_folder=media, video_folder=media)
    ds = SupervisedDataset(data, tokenizer, processor, model_config=model.config, image_folder=media,
                           video_folder=media, validation=False)
    assert ds.validation is None and len(ds) == len(reasons)
    for index, reason in enumerate(reasons):
        with pytest.raises(InvalidRecordError) as exc:
            ds[index]
        assert exc.value.reason == reason and str(exc.value) == report.first_messages[reason]


# --------------------------------------------------------------------------- the summary and the threshold
def _mixed(n_good: int, n_missing: int) -> list[dict]:
    return [_video(f"g{k}", f"v{k % 3}.mp4") for k in range(n_good)] + [
        _video(f"m{k}", f"gone{k}.mp4") for k in range(n_missing)
    ]


def test_summary_counts_and_first_three_ids(media, tmp_path, caplog):
    records = _mixed(16, 4)
    records.insert(3, dict(BAD["turns do not alternate"], id="alt"))
    data = _write(tmp_path / "d.json", records)
    with caplog.at_level(logging.INFO, logger="llava.train.data"):
        report = load_valid_records(data, video_folder=media, max_invalid_fraction=0.25)
    assert (report.total, report.kept, report.skipped) == (21, 16, 5)
    assert report.counts == {"turns do not alternate": 1, "missing video file": 4}  # in INVALID_REASONS order
    assert report.first_ids["missing video file"] == ["m0", "m1", "m2"] and report.skipped_ids[-1] == "m3"
    lines = report.summary().splitlines()
    assert lines[0] == f"{data}: validated 21 records: 16 kept, 5 skipped"
    assert lines[1].startswith("  1 turns do not alternate (first: 'alt'); e.g. sample 'alt': conversations[1]")
    assert lines[2].startswith("  4 missing video file (first: 'm0', 'm1', 'm2'); e.g. sample 'm0': video file")
    logged = [r for r in caplog.records if "validated 21 records" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING and logged[0].getMessage() == report.summary()


def test_summary_is_logged_by_rank_zero_only(media, tmp_path, caplog, monkeypatch):
    data = _write(tmp_path / "d.json", _mixed(3, 0))
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.INFO, logger="llava.train.data"):
        load_valid_records(data, video_folder=media)
    assert not [r for r in caplog.records if "validated" in r.getMessage()]
    monkeypatch.setenv("RANK", "0")
    with caplog.at_level(logging.INFO, logger="llava.train.data"):
        load_valid_records(data, video_folder=media)
    (record,) = [r for r in caplog.records if "validated" in r.getMessage()]
    assert record.levelno == logging.INFO and record.getMessage().endswith("3 kept, 0 skipped")


def test_threshold(media, tmp_path):
    assert DEFAULT_MAX_INVALID_FRACTION == 0.05
    data = _write(tmp_path / "d.json", _mixed(19, 1))  # 5 %: tolerated by default
    assert load_valid_records(data, video_folder=media).kept == 19
    data = _write(tmp_path / "d.json", _mixed(18, 2))  # 10 %
    with pytest.raises(ValueError, match=r"2 of 20 records \(10.0%\) are invalid, more than max_invalid_fraction=0.05"
                                         r".*raise --max_invalid_fraction to train on the 18 valid ones") as exc:
        load_valid_records(data, video_folder=media)
    assert "2 missing video file (first: 'm0', 'm1')" in str(exc.value) and str(data) in str(exc.value)
    assert load_valid_records(data, video_folder=media, max_invalid_fraction=0.1).kept == 18
    data = _write(tmp_path / "d.json", _mixed(0, 2))
    with pytest.raises(ValueError, match=r"(?s)validated 2 records: 0 kept.*\nno record is valid"):
        load_valid_records(data, video_folder=media, max_invalid_fraction=1)
    with pytest.raises(ValueError, match=r"holds no samples"):
        load_valid_records(_write(tmp_path / "e.json", []))


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.1"])
def test_bad_max_invalid_fraction(media, tmp_path, value):
    with pytest.raises(ValueError, match=rf"max_invalid_fraction={value!r}; expected a fraction in \[0, 1\]"):
        load_valid_records(_write(tmp_path / "d.json", _mixed(2, 0)), max_invalid_fraction=value)


def test_max_invalid_fraction_flag(tmp_path):
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", str(tmp_path), "--use_cpu", "true"]
    assert parse_args(base)[1].max_invalid_fraction == DEFAULT_MAX_INVALID_FRACTION
    assert parse_args([*base, "--max_invalid_fraction", "0.2"])[1].max_invalid_fraction == 0.2
    with pytest.raises(ValueError, match=r"--max_invalid_fraction 2.0: expected a fraction in \[0, 1\]"):
        parse_args([*base, "--max_invalid_fraction", "2"])


# --------------------------------------------------------------------------- through the training entry point
def _flags(tiny, data, media, out, *more):
    return ["--model_name_or_path", str(tiny), "--data_path", str(data), "--video_folder", str(media),
            "--image_folder", str(media), "--output_dir", str(out), *more]


def test_training_drops_bad_records_before_the_first_step(tiny, media, tmp_path, monkeypatch, caplog):
    """100 good records and one of each bad kind (5 of 105, under the default 5 %): 2 steps run, the bad
    records are never drawn, the summary is logged once."""
    from llava.train.train import train

    bad = [
        {"id": "alternate", "video": "v0.mp4", "conversations": BAD["turns do not alternate"]["conversations"]},
        _video("count", question="<image>\n<image>\nWhat moves?"),
        _video("missing", video="gone.mp4"),
        dict(_video("both"), image="a.png"),
        {"id": "role", "video": "v1.mp4", "conversations": _conv("<image>\nQ", "A", roles=("human", "bot"))},
    ]
    records = [_video(f"g{k}", f"v{k % 3}.mp4") for k in range(100)]
    for k, record in enumerate(bad):
        records.insert(20 * k + 7, record)
    data = _write(tmp_path / "data.json", records)
    drawn, datasets = [], []
    get_item = SupervisedDataset._get_item

    def recording(self, index):
        datasets.append(self)
        item = get_item(self, index)
        drawn.append(item["id"])
        return item

    monkeypatch.setattr(SupervisedDataset, "_get_item", recording)
    with caplog.at_level(logging.INFO, logger="llava.train.data"):
        out = train(_flags(tiny, data, media, tmp_path / "out", "--use_cpu", "true", "--max_steps", "2",
                           "--per_device_train_batch_size", "2", "--frames_upbound", "4", "--report_to", "none",
                           "--save_strategy", "no", "--dataloader_num_workers", "0", "--logging_steps", "1"))
    assert (out / "config.json").is_file()
    assert len(drawn) >= 4 and all(sample_id.startswith("g") for sample_id in drawn)
    dataset = datasets[0]
    assert len(dataset) == 100 and len(dataset.lengths) == len(dataset.modality_lengths) == 100
    assert [r["id"] for r in dataset.list_data_dict] == [f"g{k}" for k in range(100)]
    assert dataset.validation.skipped_ids == [r["id"] for r in bad]
    assert dataset.validation.counts == {"unknown role": 1, "turns do not alternate": 1, "both video and image": 1,
                                         "<image> count mismatch": 1, "missing video file": 1}
    (summary,) = [r.getMessage() for r in caplog.records if "validated" in r.getMessage()]
    assert summary.startswith(f"{data}: validated 105 records: 100 kept, 5 skipped\n")
    for reason, sample_id in [("unknown role", "role"), ("turns do not alternate", "alternate"),
                              ("both video and image", "both"), ("<image> count mismatch", "count"),
                              ("missing video file", "missing")]:
        assert f"  1 {reason} (first: '{sample_id}'); e.g. sample '{sample_id}'" in summary


def test_all_records_bad_fails_before_the_model_loads(tiny, media, tmp_path, monkeypatch):
    from llava.train import train as recipe

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(recipe, "load_pretrained_model", refuse)
    data = _write(tmp_path / "data.json", [_video("m0", "gone.mp4"), dict(_video("both"), image="a.png")])
    with pytest.raises(ValueError, match=r"validated 2 records: 0 kept, 2 skipped\n.*both video and image.*\n.*"
                                         r"missing video file.*\nno record is valid"):
        recipe.setup(_flags(tiny, data, media, tmp_path / "out", "--use_cpu", "true", "--report_to", "none",
                            "--max_invalid_fraction", "1"))


def _cli(*flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "llava.train.train", str(TINY_CPU), *flags]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def test_cli_threshold_names_the_flag_and_raising_it_runs(tiny, media, tmp_path):
    """Through the tiny CPU config (DeepSpeed ZeRO-2): 1 bad record of 5 stops the run before the model
    loads; with --max_invalid_fraction 0.25 it trains, logging the summary once."""
    records = [_video(f"g{k}", f"v{k % 3}.mp4") for k in range(4)] + [_video("gone", "gone.mp4")]
    data = _write(tmp_path / "data.json", records)
    flags = _flags(tiny, data, media, tmp_path / "out", "--save_strategy", "no")
    proc = _cli(*flags)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "1 of 5 records (20.0%) are invalid, more than max_invalid_fraction=0.05" in proc.stderr
    assert "raise --max_invalid_fraction" in proc.stderr and "1 missing video file (first: 'gone')" in proc.stderr
    assert "Loading weights" not in proc.stdout + proc.stderr
    proc = _cli(*flags, "--max_invalid_fraction", "0.25")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("validated 5 records: 4 kept, 1 skipped") == 1
    assert "skipping sample" not in proc.stderr and "saved to" in proc.stdout

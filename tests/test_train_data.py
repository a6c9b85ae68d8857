"""Training data: data lists, ChatML labels, the supervised dataset and the collator (tiny checkpoint, CPU)."""

from __future__ import annotations

import json
import logging
import math
import warnings

import pytest
import torch
import yaml
from PIL import Image

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.train.data import (
    DEFAULT_SYSTEM_MESSAGE,
    DataCollatorForSupervisedDataset,
    SkippedSampleWarning,
    SupervisedDataset,
    load_data_list,
    preprocess_qwen,
    system_message_from_template,
)
from llava.video import load_video, write_synthetic_video

# 48 frames at 8 fps: a 6.00 s clip, so 6 frames at 1 fps.
N_FRAMES, FPS, HW = 48, 8, (48, 64)
#: anyres grid of the tiny tower (54 px): the tiny checkpoint keeps the real 384-px pinpoints.
TINY_PINPOINTS = [[54 * w, 54 * h] for w in range(1, 4) for h in range(1, 4)]
QUESTION, ANSWER = "What is the person doing?", "A man walks along the river."
QUESTION2, ANSWER2 = "Why?", "He is late."


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(tokenizer, model, image_processor) of a tiny LLaVA-OneVision checkpoint, float32 on CPU."""
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flash-attention fallback notice
        tokenizer, model, processor, _ = load_pretrained_model(
            path, None, "llava_qwen", device_map=None, torch_dtype="float32"
        )
    model.config.image_grid_pinpoints = TINY_PINPOINTS
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder with a good video, a garbage-bytes video, a good image, two more images and a garbage image."""
    root = tmp_path_factory.mktemp("media")
    write_synthetic_video(root / "clip.mp4", frames=N_FRAMES, size=HW, fps=FPS)
    (root / "garbage.mp4").write_bytes(b"\x00\x17 this is not a video \xff" * 64)
    Image.new("RGB", (80, 60), (10, 200, 30)).save(root / "wide.png")
    Image.new("RGB", (40, 70), (200, 20, 30)).save(root / "tall.png")
    Image.new("RGB", (50, 50), (0, 0, 255)).save(root / "square.jpg")
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 32)
    return root


def _write(tmp_path, name, records):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def _conv(*texts):
    return [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(texts)]


def _video_record(sample_id="v0", video="clip.mp4", question=f"<image>\n{QUESTION}", *more):
    return {"id": sample_id, "video": video, "conversations": _conv(question, ANSWER, *more)}


def _dataset(tmp_path, stack, media, records, **kwargs):
    tokenizer, model, processor = stack
    data = _write(tmp_path, "data.json", records)
    return SupervisedDataset(data, tokenizer, processor, model_config=model.config, video_folder=media,
                             image_folder=media, **kwargs)


def _spans(mask):
    """[(start, end)] of the runs of True in a 1-D bool tensor."""
    spans, start = [], None
    for k, flag in enumerate(mask.tolist() + [False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            spans.append((start, k))
            start = None
    return spans


def _decode(tokenizer, ids):
    return tokenizer.decode([int(t) for t in ids], skip_special_tokens=False)


# --------------------------------------------------------------------------- labels
def test_two_turn_video_labels_token_by_token(tmp_path, stack, media):
    tokenizer = stack[0]
    ds = _dataset(tmp_path, stack, media, [_video_record("v0", "clip.mp4", f"<image>\n{QUESTION}", QUESTION2, ANSWER2)])
    item = ds[0]
    ids, labels = item["input_ids"], item["labels"]
    assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape and ids.dim() == 1

    placeholder = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
    assert len(placeholder) == 1 and labels[placeholder[0]] == IGNORE_INDEX

    supervised = labels != IGNORE_INDEX
    assert torch.equal(labels[supervised], ids[supervised])
    spans = _spans(supervised)
    assert [_decode(tokenizer, ids[a:b]) for a, b in spans] == [
        f"<|im_start|>assistant\n{ANSWER}<|im_end|>\n",
        f"<|im_start|>assistant\n{ANSWER2}<|im_end|>\n",
    ]
    # the unsupervised stretches are exactly the system and user turns, with the placeholder in the first
    p = placeholder[0]
    assert _decode(tokenizer, ids[:p]) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\n"
    )
    assert _decode(tokenizer, ids[p + 1 : spans[0][0]]) == f"\n{QUESTION}<|im_end|>\n"
    assert _decode(tokenizer, ids[spans[0][1] : spans[1][0]]) == f"<|im_start|>user\n{QUESTION2}<|im_end|>\n"
    assert spans[1][1] == ids.shape[0]

    # the whole sequence is Qwen2's chat template of the conversation, tokenised with <image> split out
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_MESSAGE},
                {"role": "user", "content": f"<image>\n{QUESTION}"}, {"role": "assistant", "content": ANSWER},
                {"role": "user", "content": QUESTION2}, {"role": "assistant", "content": ANSWER2}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert torch.equal(ids, tokenizer_image_token(rendered, tokenizer, return_tensors="pt"))


def test_prefix_equals_inference_prompt(stack):
    tokenizer = stack[0]
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"<image>\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    prompt = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")

    ids, labels = preprocess_qwen(_conv(f"<image>\n{QUESTION}", ANSWER), tokenizer, has_image=True)
    assert torch.equal(ids[: prompt.shape[0]], prompt)
    header = len(tokenizer("<|im_start|>assistant\n").input_ids)  # the assistant turn is supervised whole
    assert (labels[: prompt.shape[0] - header] == IGNORE_INDEX).all()
    assert torch.equal(labels[prompt.shape[0] - header :], ids[prompt.shape[0] - header :])
    assert _decode(tokenizer, ids[prompt.shape[0] :]) == f"{ANSWER}<|im_end|>\n"
    assert system_message_from_template("qwen_1_5") == DEFAULT_SYSTEM_MESSAGE == "You are a helpful assistant."


def test_system_turn_in_data_and_role_errors(stack):
    tokenizer = stack[0]
    convs = [{"from": "system", "value": "Be brief."}] + _conv("Hi", "Hello")
    ids, labels = preprocess_qwen(convs, tokenizer, has_image=False)
    text = _decode(tokenizer, ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")
    assert DEFAULT_SYSTEM_MESSAGE not in text
    assert _decode(tokenizer, ids[labels != IGNORE_INDEX]) == "<|im_start|>assistant\nHello<|im_end|>\n"
    ids2, _ = preprocess_qwen(_conv("Hi", "Hello"), tokenizer, has_image=False, system_message=None)
    ids3, labels3 = preprocess_qwen(_conv("Hi", "Look: <image>"), tokenizer, has_image=True)
    assert labels3[ids3 == IMAGE_TOKEN_INDEX].tolist() == [IGNORE_INDEX]  # never a target, whatever the turn
    assert _decode(tokenizer, ids2).startswith("<|im_start|>user\n")

    bad = [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "c"}]
    with pytest.raises(ValueError, match=r"sample 'x7'.*conversations\[1\].*alternate"):
        preprocess_qwen(bad, tokenizer, has_image=False, sample_id="x7")
    with pytest.raises(ValueError, match=r"sample 'x8'.*conversations\[0\].*'gpt'"):
        preprocess_qwen(_conv("a", "b")[1:], tokenizer, has_image=False, sample_id="x8")
    with pytest.raises(ValueError, match=r"sample 'x9'.*does not end with a 'gpt'"):
        preprocess_qwen(_conv("a", "b", "c"), tokenizer, has_image=False, sample_id="x9")
    with pytest.raises(ValueError, match=r"from='bot'"):
        preprocess_qwen([{"from": "bot", "value": "a"}], tokenizer, has_image=False)


def test_preprocess_truncation_keeps_placeholder(stack):
    tokenizer = stack[0]
    full, _ = preprocess_qwen(_conv(f"{QUESTION}\n<image>", ANSWER), tokenizer, has_image=True)
    p = int((full == IMAGE_TOKEN_INDEX).nonzero())
    with pytest.warns(UserWarning, match=r"sample 's'.*truncated to model_max_length=10.*no supervised"):
        ids, labels = preprocess_qwen(_conv(f"{QUESTION}\n<image>", ANSWER), tokenizer, has_image=True,
                                      max_len=10, sample_id="s")
    assert ids.shape == labels.shape == (10,) and p > 10
    assert torch.equal(ids[:9], full[:9]) and ids[9] == IMAGE_TOKEN_INDEX and labels[9] == IGNORE_INDEX


# --------------------------------------------------------------------------- data files
def _records(n):
    return [{"id": f"r{k}", "conversations": _conv(f"q{k}", f"a{k}")} for k in range(n)]


def test_json_and_jsonl(tmp_path):
    records = _records(4)
    assert load_data_list(_write(tmp_path, "d.json", records)) == records
    jsonl = _write(tmp_path, "d.jsonl", records)
    jsonl.write_text(jsonl.read_text() + "\n")  # blank lines are ignored
    assert load_data_list(jsonl) == records


def test_yaml_mixture_strategies(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(sub, "a.json", _records(20))
    b = _write(tmp_path, "b.jsonl", [dict(r, id="b" + r["id"]) for r in _records(10)])

    def ids_of(strategy, json_path="sub/a.json", seed=0):
        spec = tmp_path / "mix.yaml"
        entry = {"json_path": str(json_path)} | ({} if strategy is None else {"sampling_strategy": strategy})
        spec.write_text(yaml.safe_dump({"datasets": [entry]}))
        return [r["id"] for r in load_data_list(spec, seed=seed)]

    every = [f"r{k}" for k in range(20)]
    assert ids_of(None) == ids_of("all") == every
    assert ids_of("first:3") == every[:3]
    assert ids_of("end:2") == every[-2:]
    assert ids_of("end:0") == []
    assert ids_of("first:10%") == every[:2]
    assert ids_of("end:12%") == every[-3:]  # ceil(2.4)
    assert ids_of("first:100") == every
    picked = ids_of("random:5")
    assert len(set(picked)) == 5 and set(picked) <= set(every)
    assert ids_of("random:5") == picked  # reproducible
    assert ids_of("random:5", seed=1) != picked
    assert len(ids_of("random:25%")) == 5
    assert ids_of("all", json_path=b.resolve()) == [f"br{k}" for k in range(10)]  # absolute path

    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump({"datasets": [{"json_path": "sub/a.json", "sampling_strategy": "first:2"},
                                                 {"json_path": "b.jsonl", "sampling_strategy": "end:1"}]}))
    assert [r["id"] for r in load_data_list(spec)] == ["r0", "r1", "br9"]


def test_data_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_data_list(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('[{"id": 1,')
    with pytest.raises(ValueError, match=r"bad\.json.*invalid JSON"):
        load_data_list(tmp_path / "bad.json")
    (tmp_path / "bad.jsonl").write_text(json.dumps(_records(1)[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*line 2"):
        load_data_list(tmp_path / "bad.jsonl")
    _write(tmp_path, "noconv.json", [{"id": "z", "video": "x.mp4"}])
    with pytest.raises(ValueError, match=r"noconv\.json.*record 0.*'z'.*conversations"):
        load_data_list(tmp_path / "noconv.json")
    (tmp_path / "d.txt").write_text("[]")
    with pytest.raises(ValueError, match=r"suffix '\.txt'"):
        load_data_list(tmp_path / "d.txt")
    _write(tmp_path, "a.json", _records(3))
    for spec, pattern in [({"data": []}, r"no 'datasets'"),
                          ({"datasets": [{"json_path": "a.json", "sampling_strategy": "middle:3"}]}, r"'middle:3' is "
                                                                                                     r"unknown"),
                          ({"datasets": [{"json_path": "a.json", "sampling_strategy": "first:x"}]}, r"count 'x'"),
                          ({"datasets": [{"json_path": "a.json", "sampling_strategy": "random"}]}, r"lacks its count"),
                          ({"datasets": [{"sampling_strategy": "all"}]}, r"'json_path'")]:
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(ValueError, match=r"m\.yaml.*" + pattern):
            load_data_list(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"datasets": [{"json_path": "missing.json"}]}))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_data_list(tmp_path / "m.yaml")


# --------------------------------------------------------------------------- video / image samples
@pytest.mark.parametrize(("kwargs", "frames"), [
    ({}, 6),                                                   # 1 fps: frames 0, 8, ..., 40
    ({"frames_upbound": 4}, 4),                                # more than the bound: uniform 4
    ({"frames_upbound": 8, "force_sample": True}, 8),          # forced uniform
    ({"video_fps": 2, "frames_upbound": 32}, 12),              # 2 fps: every 4th frame
])
def test_video_frames_as_load_video_fps(tmp_path, stack, media, kwargs, frames):
    processor = stack[2]
    ds = _dataset(tmp_path, stack, media, [_video_record()], **kwargs)
    item = ds[0]
    clip = load_video(media / "clip.mp4", max_frames=kwargs.get("frames_upbound", 32), mode="fps",
                      force_sample=kwargs.get("force_sample", False), target_fps=kwargs.get("video_fps", 1))
    assert clip.num_frames == frames
    expected = processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
    assert item["images"][0].shape == (frames, 3, 54, 54)
    assert torch.equal(item["images"][0], expected)
    assert item["modalities"] == ["video"] and item["image_sizes"] == [(HW[1], HW[0])]
    assert item["id"] == "v0" and item["skipped"] == 0


def test_time_instruction(tmp_path, stack, media):
    tokenizer = stack[0]
    ds = _dataset(tmp_path, stack, media, [_video_record()], add_time_instruction=True)
    ids = ds[0]["input_ids"]
    instruction = load_video(media / "clip.mp4", max_frames=32, mode="fps").time_instruction()  # its text: test_video
    # lmms-eval llava_vid's prompt: "<image>\n" + f"{time_instruction}\n{question}"
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], f"<image>\n{instruction}\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    prompt = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")
    assert torch.equal(ids[: prompt.shape[0]], prompt)
    assert ds.list_data_dict[0]["conversations"][0]["value"] == f"<image>\n{QUESTION}"  # records untouched


def test_image_samples(tmp_path, stack, media):
    records = [{"id": "i1", "image": "wide.png", "conversations": _conv("<image>\nColour?", "Green.")},
               {"id": "i2", "image": ["tall.png", "square.jpg"],
                "conversations": _conv("<image>\n<image>\nSame?", "No.")},
               {"id": "t1", "conversations": _conv("Hi", "Hello")}]
    ds = _dataset(tmp_path, stack, media, records)
    one = ds[0]
    # anyres: an 80x60 image fits a 2x2 grid of 54 px patches, plus the overview
    assert [tuple(x.shape) for x in one["images"]] == [(5, 3, 54, 54)]
    assert one["modalities"] == ["image"] and one["image_sizes"] == [(80, 60)]
    two = ds[1]
    assert [tuple(x.shape) for x in two["images"]] == [(3, 54, 54), (3, 54, 54)]  # padded to squares
    assert two["modalities"] == ["image", "image"] and two["image_sizes"] == [(40, 70), (50, 50)]
    assert int((two["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 2
    text = ds[2]
    assert text["images"] == [] and text["modalities"] == [] and IMAGE_TOKEN_INDEX not in text["input_ids"]
    assert ds.lengths == [3 + 128, 4 + 128, 2]  # words ("<image>" is one), + 128 for visual samples
    assert ds.modality_lengths == [3, 4, -2]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [
    {"id": "gone", "video": "missing.mp4"},
    {"id": "junk", "video": "garbage.mp4"},
    {"id": "junkimg", "image": "garbage.png"},
    {"id": "noimg", "image": "missing.png"},
])
def test_bad_media_is_skipped(tmp_path, stack, media, bad):
    """The draw-time path (validation=False: a missing file is otherwise dropped up front)."""
    record = dict(bad, conversations=_conv("<image>\nQ", "A"))
    ds = _dataset(tmp_path, stack, media, [record, _video_record("good")], validation=False)
    path = bad.get("video") or bad.get("image")
    with pytest.warns(SkippedSampleWarning, match=rf"skipping sample '{bad['id']}'.*{path}"):
        item = ds[0]
    assert item["id"] == "good" and item["skipped"] == 1
    assert ds.skipped_ids == [bad["id"]]


def test_all_bad_raises(tmp_path, stack, media):
    records = [{"id": f"b{k}", "video": "missing.mp4", "conversations": _conv("<image>\nQ", "A")} for k in range(3)]
    ds = _dataset(tmp_path, stack, media, records, validation=False)  # the draw-time path
    with pytest.warns(SkippedSampleWarning), pytest.raises(RuntimeError, match=r"\['b1', 'b2', 'b0'\]"):
        ds[1]
    ds = _dataset(tmp_path, stack, media, records + [_video_record("good")], max_retries=1, validation=False)
    with pytest.warns(SkippedSampleWarning), pytest.raises(RuntimeError, match=r"\['b0', 'b1'\].*max_retries=1"):
        ds[0]
    with pytest.warns(SkippedSampleWarning):
        assert ds[2]["skipped"] == 1


def test_image_token_prepended_once(tmp_path, stack, media, caplog):
    tokenizer = stack[0]
    ds = _dataset(tmp_path, stack, media, [_video_record("plain", question=QUESTION)])
    with caplog.at_level(logging.INFO, logger="llava.train.data"):
        first, second = ds[0], ds[0]
    assert ds.prepended_image_token == 1
    assert sum("'plain'" in r.getMessage() and "prepended" in r.getMessage() for r in caplog.records) == 1
    for item in (first, second):
        p = int((item["input_ids"] == IMAGE_TOKEN_INDEX).nonzero())
        assert _decode(tokenizer, item["input_ids"][:p]).endswith("<|im_end|>\n<|im_start|>user\n")
        assert _decode(tokenizer, item["input_ids"][p + 1 :]).startswith(f"\n{QUESTION}<|im_end|>")


@pytest.mark.parametrize(("record", "counts"), [
    (_video_record("v2", question=f"<image>\n<image>\n{QUESTION}"), "2 <image>.*1 visual"),
    ({"id": "i2", "image": ["tall.png", "square.jpg"], "conversations": _conv("<image>\nQ", "A")}, "1 <image>.*2 "
                                                                                                   "visual"),
    ({"id": "t2", "conversations": _conv("<image>\nQ", "A")}, "1 <image>.*0 visual"),
])
def test_placeholder_count_mismatch(tmp_path, stack, media, record, counts):
    ds = _dataset(tmp_path, stack, media, [record], validation=False)  # the draw-time path
    with pytest.raises(ValueError, match=rf"sample '{record['id']}': {counts}"):
        ds[0]


def test_dataset_truncates_with_warning(tmp_path, stack, media):
    ds = _dataset(tmp_path, stack, media, [_video_record()], model_max_length=12)
    with pytest.warns(UserWarning, match=r"sample 'v0'.*truncated to model_max_length=12"):
        item = ds[0]
    assert item["input_ids"].shape == (12,) and int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 1


# --------------------------------------------------------------------------- collator and the model
def _item(ids, n_images=0, skipped=0, sample_id="s"):
    ids = torch.tensor(ids)
    labels = torch.where(ids > 5, ids, torch.full_like(ids, IGNORE_INDEX))
    images = [torch.full((1 + k, 3, 2, 2), float(k)) for k in range(n_images)]
    return {"input_ids": ids, "labels": labels, "images": images, "modalities": ["video"] * n_images,
            "image_sizes": [(k, k) for k in range(n_images)], "id": sample_id, "skipped": skipped}


def test_collator_pads_masks_concatenates(stack):
    tokenizer = stack[0]
    pad = tokenizer.pad_token_id
    batch = DataCollatorForSupervisedDataset(tokenizer)(
        [
            _item([1, IMAGE_TOKEN_INDEX, 7, 8], 1, skipped=2),
            _item([9, 3]),
            _item([IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 6], 2),
        ]
    )
    assert batch["input_ids"].tolist() == [[1, IMAGE_TOKEN_INDEX, 7, 8], [9, 3, pad, pad],
                                           [IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 6, pad]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [9, -100, -100, -100], [-100, -100, 6, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert [x.shape[0] for x in batch["images"]] == [1, 1, 2]
    assert batch["modalities"] == ["video"] * 3 and batch["image_sizes"] == [(0, 0), (0, 0), (1, 1)]
    assert batch["skipped_samples"].dtype == torch.long and batch["skipped_samples"].dim() == 0
    assert int(batch["skipped_samples"]) == 2

    text_only = DataCollatorForSupervisedDataset(tokenizer)([_item([9, 3]), _item([7])])
    assert "images" not in text_only and text_only["modalities"] == []

    with pytest.warns(UserWarning, match=r"sample 'long'.*truncated to model_max_length=3"):
        cut = DataCollatorForSupervisedDataset(tokenizer, model_max_length=3)([
            _item([6, 7, 8, 9, IMAGE_TOKEN_INDEX, 10], 1, sample_id="long"), _item([9])])
    assert cut["input_ids"].tolist() == [[6, 7, IMAGE_TOKEN_INDEX], [9, pad, pad]]
    assert cut["labels"].tolist() == [[6, 7, -100], [9, -100, -100]]

    with pytest.raises(ValueError, match=r"sample 'odd': 1 image placeholder\(s\) but 0"):
        DataCollatorForSupervisedDataset(tokenizer)([_item([IMAGE_TOKEN_INDEX, 7], 0, sample_id="odd")])


def test_batch_feeds_the_model(tmp_path, stack, media):
    tokenizer, model, _ = stack
    records = [_video_record("v0", "clip.mp4", f"<image>\n{QUESTION}", QUESTION2, ANSWER2),
               {"id": "i1", "image": "wide.png", "conversations": _conv("<image>\nColour?", "Green.")},
               {"id": "t1", "conversations": _conv("Hi", "Hello")}]
    ds = _dataset(tmp_path, stack, media, records, frames_upbound=4)
    batch = DataCollatorForSupervisedDataset(tokenizer, model_max_length=256)([ds[0], ds[1], ds[2]])
    assert int(batch.pop("skipped_samples")) == 0
    assert batch["modalities"] == ["video", "image"] and len(batch["images"]) == 2
    out = model(**batch)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    assert model.get_model().mm_projector[0].weight.grad is not None
    model.zero_grad(set_to_none=True)

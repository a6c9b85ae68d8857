"""``python -m llava.train.train`` on CPU with the tiny model: DeepSpeed ZeRO-2 steps with AOT in the
loop, checkpoints, resume, reload through ``load_pretrained_model``, LoRA, wandb offline, freezing by
``mm_tunable_parts``, bad input. Each run goes through the same command line a user types."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")
pytest.importorskip("peft")

from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.video import write_synthetic_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_CPU = ROOT / "configs" / "train" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_tiny_checkpoint(root / "tiny")
    videos = root / "videos"
    videos.mkdir()
    for i in range(3):
        write_synthetic_video(videos / f"v{i}.mp4", frames=80, seed=i)  # 10 s at 8 fps: 8 frames at 1 fps
    turn = [{"from": "human", "value": "<image>\nWhat moves?"}, {"from": "gpt", "value": "A square."}]
    data = [{"id": f"s{i}", "video": f"v{i % 3}.mp4", "conversations": turn} for i in range(4)]
    (videos / "corrupt.mp4").write_bytes(b"\x00 not a video \xff" * 64)  # present, so it passes validation
    data.append({"id": "corrupt", "video": "corrupt.mp4", "conversations": turn})
    data.append(
        {
            "id": "no_image_token",
            "video": "v0.mp4",
            "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A moving square."}],
        }
    )
    (root / "data.json").write_text(json.dumps(data))
    return root


def _train(
    workdir: Path, out: Path, *flags: str, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "llava.train.train", str(TINY_CPU),
           "--model_name_or_path", str(workdir / "tiny"), "--data_path", str(workdir / "data.json"),
           "--video_folder", str(workdir / "videos"), "--output_dir", str(out), *flags]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _log(out: Path) -> list[dict]:
    last = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((last / "trainer_state.json").read_text())["log_history"]


def _logits(model, tokenizer, video: Path, processor) -> torch.Tensor:
    from llava.video import load_video

    pixels = processor.preprocess(load_video(video, max_frames=8).frames, return_tensors="pt")["pixel_values"]
    ids = torch.tensor([tokenizer("<|im_start|>user\n").input_ids + [-200] + tokenizer("\nWhat moves?").input_ids])
    with torch.no_grad():
        return model(input_ids=ids, images=[pixels], modalities=["video"]).logits


@pytest.fixture(scope="module")
def full_run(workdir):
    """3 ZeRO-2 steps of batch 2 over the 6 samples (one epoch), AOT on, checkpoints every step."""
    out = workdir / "full"
    proc = _train(workdir, out, "--max_steps", "3", "--time_visual", "True")
    return out, proc


def test_zero2_steps_with_aot_on_cpu(full_run):
    out, proc = full_run
    log = [entry for entry in _log(out) if "loss" in entry]
    assert [e["step"] for e in log] == [1, 2, 3]
    assert all(math.isfinite(e["loss"]) and math.isfinite(e["grad_norm"]) and e["grad_norm"] > 0 for e in log)
    for e in log:  # what AOT did, logged per step
        assert 0 < e["aot/visual_tokens"] < e["aot/visual_tokens_plain"] == 8 * 196 + 1
        assert 0 < e["aot/retention"] < 0.5 and e["aot/compression_ms"] > 0
    assert log[-1]["data/skipped_samples"] == 1  # the corrupt video, skipped and counted, never a crash
    assert "skipping sample 'corrupt'" in proc.stderr
    assert "no_image_token" in proc.stderr  # <image> prepended, and said
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_output_reloads_with_the_trained_weights(full_run, workdir):
    out, _ = full_run
    tok, base, processor, _ = load_pretrained_model(
        str(workdir / "tiny"), None, "llava_qwen", device_map=None, torch_dtype="float32"
    )
    tok2, model, processor2, _ = load_pretrained_model(
        str(out), None, "llava_qwen", device_map=None, torch_dtype="float32"
    )
    trained = dict(model.named_parameters())
    changed = {n for n, p in base.named_parameters() if not torch.equal(p, trained[n])}
    assert any("mm_projector" in n for n in changed) and any(".layers." in n for n in changed)
    assert not any("vision_tower" in n for n in changed)  # not in mm_tunable_parts: frozen
    assert model.compression is not None and model.compression.num_anchors == 126  # AOT recorded with the model
    assert torch.isfinite(_logits(model, tok2, workdir / "videos" / "v0.mp4", processor2)).all()


def test_resume_from_a_checkpoint(full_run, workdir, tmp_path):
    out, _ = full_run
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    proc = _train(workdir, resumed, "--max_steps", "3", "--resume_from_checkpoint", str(resumed / "checkpoint-2"),
                  "--log_level", "info")
    assert "Resuming training from checkpoint with epoch 0 and global step 2" in proc.stdout + proc.stderr
    log = [e for e in _log(resumed) if "loss" in e]
    first = [e for e in _log(out) if "loss" in e]
    assert [e["step"] for e in log] == [1, 2, 3]
    assert [e["loss"] for e in log[:2]] == [e["loss"] for e in first[:2]]  # carried over, not retrained
    # the one new step sees the batch, weights and optimizer state the uninterrupted run saw at step 3
    assert log[2]["loss"] == pytest.approx(first[2]["loss"], rel=1e-5)
    assert log[2]["grad_norm"] == pytest.approx(first[2]["grad_norm"], rel=1e-4)
    load_pretrained_model(str(resumed), None, "llava_qwen", device_map=None, torch_dtype="float32")


def test_lora_with_zero2_saves_an_adapter_that_reloads(workdir):
    out = workdir / "lora"
    _train(workdir, out, "--max_steps", "2", "--lora_enable", "true", "--lora_r", "8", "--lora_alpha", "16",
           "--gradient_checkpointing", "true", "--learning_rate", "1e-2")
    assert (out / "adapter_config.json").is_file() and (out / "non_lora_trainables.bin").is_file()
    assert json.loads((out / "config.json").read_text())["lora_base_model"] == str((workdir / "tiny").resolve())
    tok, base, processor, _ = load_pretrained_model(
        str(workdir / "tiny"), None, "llava_qwen", device_map=None, torch_dtype="float32"
    )
    tok, merged, processor, _ = load_pretrained_model(
        str(out), None, "llava_qwen", device_map=None, torch_dtype="float32"
    )
    assert merged.compression == base.set_compression("paper_ov_10pct")  # AOT recorded with the adapter
    video = workdir / "videos" / "v1.mp4"
    assert not torch.allclose(_logits(base, tok, video, processor), _logits(merged, tok, video, processor), atol=1e-6)
    frozen = dict(merged.named_parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in base.named_parameters() if "vision_tower" in n)


def test_wandb_offline_logs_the_compression_statistics(workdir, tmp_path):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    _train(workdir, tmp_path / "out", "--max_steps", "1", "--report_to", "wandb", "--run_name", "tiny-aot",
           "--save_strategy", "no", env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(run_file))
    logged = {}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            logged.update({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    assert 0 < float(logged["train/aot/retention"]) < 0.5
    assert float(logged["train/aot/visual_tokens"]) > 0 and "train/data/skipped_samples" in logged


@pytest.mark.parametrize(("flags", "message"), [
    (("--deepspeed", "{bad}"), "--deepspeed {bad}: not valid JSON"),
    (("--compression", "ov_11pct"), "paper_ov_10pct"),
    (("--mm_tunable_parts", "mm_projector"), "mm_mlp_adapter"),
], ids=["deepspeed", "preset", "tunable_parts"])
def test_bad_flags_fail_before_the_model_loads(workdir, tmp_path, flags, message):
    """The command's exit status 2 and message; the message strings themselves: test_train_configs."""
    bad = tmp_path / "zero2.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}')
    proc = _train(workdir, tmp_path / "out", *(f.format(bad=bad) for f in flags), check=False)
    assert proc.returncode == 2 and message.format(bad=bad) in proc.stderr
    assert "Loading weights" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("parts", "lora", "trainable"),
    [
        ("mm_mlp_adapter", False, {"mm_projector"}),
        (
            "mm_vision_tower,mm_mlp_adapter,mm_language_model",
            False,
            {"mm_projector", "vision_tower", "layers", "embed_tokens", "lm_head"},
        ),
        ("mm_mlp_adapter,mm_language_model", True, {"mm_projector", "lora_"}),
    ],
)
def test_mm_tunable_parts_freezing(workdir, parts, lora, trainable):
    from llava.train.train import setup

    s = setup(["--model_name_or_path", str(workdir / "tiny"), "--data_path", str(workdir / "data.json"),
               "--video_folder", str(workdir / "videos"), "--output_dir", str(workdir / "unused"), "--use_cpu", "true",
               "--mm_tunable_parts", parts, "--lora_enable", str(lora), "--report_to", "none"])
    names = [n for n, p in s.model.named_parameters() if p.requires_grad]
    found = {key for key in trainable if any(key in n for n in names)}
    assert found == trainable, (parts, sorted(found))
    if lora:
        assert not any(".layers." in n and "lora_" not in n for n in names)  # the LLM's own weights stay frozen
        assert not any("vision_tower" in n for n in names)
    if "mm_vision_tower" not in parts:
        assert not any("vision_tower" in n for n in names)

"""Timestamps that stay true under compression, read back from the provenance (each token's plan
position: the frame of the cell it stands for, a merged token's its anchor's), for every family:

* LLaVA-Video (``aot_llava_vid`` with ``add_time_instruction``): the time instruction lists exactly the
  frames that keep a token, at the times lmms-eval's own ``llava_vid`` gives them; with every frame kept
  the prompt is the built-in's, token for token.
* Qwen2.5-VL: each kept token's (time, row, column) position is its source cell's under absolute-time
  M-RoPE, computed here from the processor's ``second_per_grid_ts`` and the config's ``tokens_per_second``.
* Qwen3-VL: the compressed prompt's timestamp text is the processor's for exactly the temporal patches that
  keep a token, and each block holds as many placeholders as tokens of that patch remain.

Every retention and a method that drops whole frames (DyCoke) are covered, so the rewrite is exercised.
"""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402

from llava.eval.adapters.llava_video import AOTLlavaVid  # noqa: E402
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402
from llava.video import load_video, synthetic_frame, write_rgb_video  # noqa: E402

GEN = {"max_new_tokens": 4, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": ["\n\n"]}
#: compression -> whether it must drop at least one whole frame of the 16 (DyCoke does: the rewrite is exercised)
SETTINGS = {"none": False, "aot@1.0": False, "aot@0.5": False, "aot@0.25": False, "aot@0.1": False,
            "aot@0.03": False, "dycoke@0.25": True, "dycoke@0.1": True, "random@0.1": False}
TIMES = re.compile(r"These frames are located at (.*?)\.Please answer")
COUNT = re.compile(r"and (\d+) frames are uniformly sampled")


def _kept_frames(result) -> list[int]:
    """The frames with a visual token left, from the plan's provenance (a merged token counts for its
    anchor's; newline tokens, kept on every row, are not visual)."""
    plan = result.plan
    return sorted(set(plan.positions[~plan.is_newline, 0].tolist()))


# ---------------------------------------------------------------------------------------------- LLaVA-Video
@pytest.fixture(scope="module")
def llava_vid(tmp_path_factory):
    """A tiny LLaVA-Video-style checkpoint, a 48-frame clip at 8 fps sampled to 16 frames, and lmms-eval's
    own ``llava_vid`` prompt ids for it (the oracle). The clip holds still for its first half, then moves:
    DyCoke prunes the repeated frames whole."""
    from lmms_eval.models.simple.llava_vid import LlavaVid

    root = tmp_path_factory.mktemp("timestamps")
    ckpt = str(write_tiny_checkpoint(root / "ckpt", newline_position="grid", pool_mode="average"))
    still = synthetic_frame(0, frames=48, seed=3)
    images = [still] * 24 + [synthetic_frame(i, frames=48, seed=3) for i in range(24, 48)]
    video = str(write_rgb_video(root / "clip.mp4", images, size=(96, 128), fps=8))
    common = {"pretrained": ckpt, "attn_implementation": "sdpa", "conv_template": "qwen_1_5",
              "mm_spatial_pool_mode": "average", "mm_newline_position": "grid", "max_frames_num": 16,
              "force_sample": True, "add_time_instruction": True}
    builtin = LlavaVid(device="cpu", device_map="auto", **common)
    calls = _spy(builtin)
    builtin.generate_until(_requests(builtin, video))
    ids = calls[0][1]["inputs"][0].cpu()
    return {"common": common, "video": video, "builtin_ids": ids, "builtin_prompt": _decode(builtin, ids)}


def _requests(model, video):
    model.task_dict = {"t": {"test": {0: {"video": video}}}}
    return [Instance(request_type="generate_until", arguments=("When does the square move?", dict(GEN),
                                                               lambda doc: [doc["video"]], 0, "t", "test"),
                     idx=0, metadata={"task": "t", "doc_id": 0, "repeats": 1})]


def _spy(adapter):
    """What the instance's ``generate`` receives (for this test only)."""
    calls, real = [], adapter.model.generate

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    adapter.model.generate = spy
    return calls


def _decode(adapter, ids: torch.Tensor) -> str:
    from llava.constants import IMAGE_TOKEN_INDEX

    return adapter.tokenizer.decode([int(i) for i in ids if int(i) != IMAGE_TOKEN_INDEX])


def _listed(prompt: str) -> tuple[int, list[str]]:
    (times,) = TIMES.findall(prompt)
    (count,) = COUNT.findall(prompt)
    return int(count), times.split(",")


def test_the_builtins_instruction_lists_the_sixteen_sampled_frames(llava_vid):
    count, times = _listed(llava_vid["builtin_prompt"])
    clip = load_video(llava_vid["video"], max_frames=16, mode="fps", force_sample=True)
    assert count == 16 and times == [f"{t:.2f}s" for t in clip.timestamps]


@pytest.mark.parametrize("compression", sorted(SETTINGS))
def test_the_time_instruction_lists_the_frames_whose_tokens_remain(llava_vid, compression):
    ours = AOTLlavaVid(device="cpu", compression=compression, torch_dtype="float32", **llava_vid["common"])
    calls = _spy(ours)
    (out,) = ours.generate_until(_requests(ours, llava_vid["video"]))
    args, kwargs = calls[0]
    prompt = _decode(ours, args[0][0].cpu())
    _, builtin_times = _listed(llava_vid["builtin_prompt"])
    record = out.token_counts.efficiency
    (stats,) = ours.model.last_visual_stats
    if compression == "none":
        kept = list(range(16))
    else:
        kept = _kept_frames(stats.result)
        # the tokens spliced are the ones encoded before the prompt was written (encoded once)
        (tokens,) = kwargs["visual_tokens"]
        assert tokens.shape[0] == stats.visual_tokens == record["visual_tokens"]
    if SETTINGS[compression]:
        assert len(kept) < 16, f"{compression} kept every frame: the rewrite is not exercised"
    count, times = _listed(prompt)
    assert count == len(kept) and times == [builtin_times[i] for i in kept]
    assert [f"{t:.2f}s" for t in record["frame_times"]] == times
    if len(kept) == 16:  # every frame keeps a token: lmms-eval's prompt, token for token
        assert torch.equal(args[0][0].cpu(), llava_vid["builtin_ids"])
    else:  # only the count and the times differ from the built-in's prompt
        assert TIMES.sub("", COUNT.sub("", prompt)) == TIMES.sub("", COUNT.sub("", llava_vid["builtin_prompt"]))


def test_without_the_instruction_the_record_carries_no_times(llava_vid):
    common = {**llava_vid["common"], "add_time_instruction": False}
    ours = AOTLlavaVid(device="cpu", compression="dycoke@0.25", torch_dtype="float32", **common)
    calls = _spy(ours)
    (out,) = ours.generate_until(_requests(ours, llava_vid["video"]))
    assert out.token_counts.efficiency["frame_times"] is None
    assert "visual_tokens" not in calls[0][1]  # nothing to rewrite: the model encodes as it generates


# ---------------------------------------------------------------------------------------------- Qwen-VL
QWEN_SETTINGS = ("aot@1.0", "aot@0.5", "aot@0.25", "aot@0.1", "dycoke@0.25", "dycoke@0.1", "random@0.25")
QWEN_PROMPT = "What moves in the video?"


def _qwen_inputs(processor, video: str, patch: int | None = None, **processor_kwargs):
    """The processor's inputs for one video as the plugins build them: ``qwen_vl_utils`` samples and
    resizes the frames (16 of the 48, so 8 temporal patches) and gives their metadata."""
    from qwen_vl_utils import process_vision_info

    messages = [{"role": "user", "content": [
        {"type": "video", "video": video, "nframes": 16, "max_pixels": 96 * 128, "min_pixels": 64 * 64},
        {"type": "text", "text": QWEN_PROMPT}]}]
    extra = {} if patch is None else {"image_patch_size": patch}
    _, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True, return_video_metadata=True,
                                                  **extra)
    (frames, meta), = videos
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], videos=[frames], video_metadata=[meta], return_tensors="pt",
                     **video_kwargs, **processor_kwargs)


@pytest.fixture(scope="module")
def still_then_moving(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-times")
    still = synthetic_frame(0, frames=48, size=(96, 128), seed=5)
    images = [still] * 24 + [synthetic_frame(i, frames=48, size=(96, 128), seed=5) for i in range(24, 48)]
    return str(write_rgb_video(root / "clip.mp4", images, size=(96, 128), fps=8)), root


def _tiny(path, model_class: str):
    """A tiny checkpoint's transformers model (float32, eval) and processor."""
    import transformers

    model = getattr(transformers, model_class).from_pretrained(path, torch_dtype=torch.float32).eval()
    return model, transformers.AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def qwen25(still_then_moving):
    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl

    video, root = still_then_moving
    model, processor = _tiny(write_tiny_qwen2_5_vl(root / "qwen25"), "Qwen2_5_VLForConditionalGeneration")
    return model, _qwen_inputs(processor, video, cap_pixels_per_frame=True)


@pytest.mark.parametrize("compression", QWEN_SETTINGS)
def test_qwen2_5_vl_kept_tokens_sit_at_their_source_cells_absolute_time(qwen25, compression):
    """Absolute-time M-RoPE: a token of temporal patch t sits at time ``st + int(t * tokens_per_second *
    second_per_grid_ts)`` (the Qwen2.5-VL report's rule) and at its cell's row and column."""
    from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression

    model, inputs = qwen25
    spg = float(inputs["second_per_grid_ts"][0])
    tps = int(model.config.vision_config.tokens_per_second)
    assert spg * tps not in (0.0, 1.0)  # the times are not the patch indices: the rule is exercised
    seam = Qwen25VLCompression(model)
    seam.set_compression(compression)
    prepared = seam.prepare(**inputs)
    (result,) = seam.last_results
    pads = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id)[:, 0]
    st = int(pads[0])  # the text before the video holds positions 0 .. st - 1
    kept = prepared["position_ids"][:, 0, st:st + result.num_tokens].T  # (T, 3) as the model will see them
    f, r, c = result.plan.positions.unbind(-1)
    want = torch.stack([st + (f.double() * tps * spg).long(), st + r, st + c], -1)
    assert torch.equal(kept, want)
    frames = _kept_frames(result)
    if compression.startswith("dycoke@0.1"):
        assert len(frames) < 8  # whole temporal patches are gone; the others keep their times
    # after the video the text continues from the uncompressed prompt's offset
    full, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                         video_grid_thw=inputs["video_grid_thw"],
                                         second_per_grid_ts=inputs["second_per_grid_ts"],
                                         attention_mask=inputs["attention_mask"])
    tail = inputs["input_ids"].shape[1] - int(pads[-1]) - 1
    assert torch.equal(prepared["position_ids"][:, 0, -tail:], full[:, 0, -tail:])


@pytest.fixture(scope="module")
def qwen3(still_then_moving):
    from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl

    video, root = still_then_moving
    model, processor = _tiny(write_tiny_qwen3_vl(root / "qwen3"), "Qwen3VLForConditionalGeneration")
    return model, processor, _qwen_inputs(processor, video, patch=16, do_resize=False, cap_pixels_per_frame=True)


STAMP = re.compile(r"<([0-9.]+) seconds>")


@pytest.mark.parametrize("compression", QWEN_SETTINGS)
def test_qwen3_vl_prompt_keeps_the_timestamps_of_the_patches_that_remain(qwen3, compression):
    """The compressed prompt's text, decoded: the processor's timestamp for exactly the temporal patches
    with a token left, each block holding that patch's tokens; each kept token at its source cell's
    position in transformers' positions of the uncompressed prompt."""
    from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression

    model, processor, inputs = qwen3
    video_id = model.config.video_token_id
    stamps = STAMP.findall(processor.tokenizer.decode(inputs["input_ids"][0]))
    assert len(stamps) == 8 and len(set(stamps)) == 8  # the processor's, one per temporal patch
    seam = Qwen3VLCompression(model)
    seam.set_compression(compression)
    prepared = seam.prepare(**inputs)
    (result,) = seam.last_results
    frames = _kept_frames(result)
    ids = prepared["input_ids"][0]
    text = processor.tokenizer.decode(ids)
    assert STAMP.findall(text) == [stamps[i] for i in frames]
    blocks = re.findall(r"<\|vision_start\|>((?:<\|video_pad\|>)*)<\|vision_end\|>", text)
    per_frame = torch.bincount(result.plan.positions[:, 0], minlength=8)
    assert [b.count("<|video_pad|>") for b in blocks] == [int(per_frame[i]) for i in frames]
    if compression.startswith("dycoke@0.1"):
        assert len(frames) < 8
    full, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                         video_grid_thw=inputs["video_grid_thw"],
                                         attention_mask=inputs["attention_mask"])
    pads = torch.nonzero(inputs["input_ids"][0] == video_id)[:, 0].view(8, -1)  # each patch's cells, row-major
    _, h, w = inputs["video_grid_thw"][0].tolist()
    f, r, c = result.plan.positions.unbind(-1)
    order = torch.argsort(f, stable=True)  # the prompt holds each patch's tokens in its own block
    cells = pads[f, r * (w // 2) + c][order]
    got = prepared["position_ids"][:, 0, torch.nonzero(ids == video_id)[:, 0]]
    assert torch.equal(got, full[:, 0, cells])


# ------------------------------------------------------------------------- through lmms-eval's CLI
@pytest.mark.slow
def test_llava_video_on_the_grounding_task_through_lmms_evals_cli(llava_vid, tmp_path):
    """``aot_smoke_grounding`` (lmms-eval's Charades-STA prompt and scorer) through ``python -m lmms_eval``:
    ``aot_llava_vid`` with ``compression=none`` answers as lmms-eval's own ``llava_vid``; with DyCoke at 10 %
    each sample's record lists fewer frame times, all of them times of the full prompt."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    include = Path(__file__).resolve().parents[1] / "lmms_eval_tasks"
    common = dict(llava_vid["common"], max_frames_num=8)
    args = ",".join(f"{k}={v}" for k, v in common.items())

    def run(model: str, extra: str = "") -> dict[int, dict]:
        out = tmp_path / (model + extra.replace("=", "_").replace("@", "_").replace(",", ""))
        proc = subprocess.run(
            [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", args + extra,
             "--tasks", "aot_smoke_grounding", "--include_path", str(include), "--batch_size", "1",
             "--device", "cpu", "--limit", "2", "--gen_kwargs", "max_new_tokens=12",
             "--output_path", str(out), "--log_samples"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path,) = out.rglob("*_samples_aot_smoke_grounding.jsonl")
        return {s["doc_id"]: s for s in map(json.loads, path.read_text().splitlines())}

    builtin = run("llava_vid", ",device_map=auto")  # its default device_map is cuda:0
    plain = run("aot_llava_vid", ",compression=none,torch_dtype=float16")
    dycoke = run("aot_llava_vid", ",compression=dycoke@0.1,torch_dtype=float16")
    assert {d: s["filtered_resps"] for d, s in plain.items()} == {d: s["filtered_resps"] for d, s in builtin.items()}
    for doc_id, sample in dycoke.items():
        full_times = plain[doc_id]["token_counts"][0]["frame_times"]
        times = sample["token_counts"][0]["frame_times"]
        assert len(full_times) == 8 and 0 < len(times) < 8 and set(times) < set(full_times)

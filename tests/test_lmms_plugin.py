"""The lmms-eval plugin models against lmms-eval 0.7.3's built-in adapters, in process (CPU, tiny
checkpoint): registration, identical prompts / frames / answers with ``compression=none``, batching,
failed samples, efficiency accounting. The end-to-end CLI runs are in test_smoke_eval.py."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import GenerationResult, Instance  # noqa: E402

from llava.eval import efficiency as eff  # noqa: E402
from llava.eval.adapters.base import EfficiencyCounts  # noqa: E402
from llava.eval.adapters.llava_onevision import AOTLlavaOneVision  # noqa: E402
from llava.eval.adapters.llava_video import AOTLlavaVid  # noqa: E402
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402
from llava.video import write_synthetic_video  # noqa: E402

GEN = {"max_new_tokens": 5, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": ["\n\n"]}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    ckpt = write_tiny_checkpoint(root / "ckpt")
    grid_ckpt = write_tiny_checkpoint(root / "ckpt_grid", newline_position="grid", pool_mode="average")
    videos = [write_synthetic_video(root / f"v{i}.mp4", frames=24 + 8 * i, seed=i) for i in range(3)]
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return {"ckpt": str(ckpt), "grid": str(grid_ckpt), "videos": [str(v) for v in videos], "corrupt": str(corrupt),
            "missing": str(root / "missing.mp4")}


def _requests(model, videos, questions=None, gen=GEN):
    docs = {i: {"video": v} for i, v in enumerate(videos)}
    model.task_dict = {"t": {"test": docs}}
    questions = questions or [f"Question {i}: what moves?" for i in range(len(videos))]
    return [
        Instance(request_type="generate_until", arguments=(q, dict(gen), lambda doc: [doc["video"]], i, "t", "test"),
                 idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i, q in enumerate(questions)
    ]


def _capture(model):
    """Record what ``generate`` receives (the instance's method only, for this test)."""
    calls = []
    real = model.model.generate

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    model.model.generate = spy
    return calls


def test_entry_point_registers_both_models():
    from lmms_eval.models import get_model

    assert get_model("aot_llava_onevision") is AOTLlavaOneVision
    assert get_model("aot_llava_vid") is AOTLlavaVid


def test_unknown_preset_lists_the_presets(assets):
    with pytest.raises(ValueError, match="paper_ov_10pct"):
        AOTLlavaOneVision(pretrained=assets["ckpt"], compression="ov_11pct", device="cpu")


def test_unknown_model_arg_is_named(assets):
    with pytest.raises(ValueError, match="model_args key 'max_frame' is not accepted by aot_llava_onevision"):
        AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", max_frame=8)


def test_onevision_matches_the_builtin(assets):
    """compression=none: the same prompt ids, the same frames (pixels) and the same answer as lmms-eval's
    llava_onevision."""
    from lmms_eval.models.simple.llava_onevision import Llava_OneVision

    common = {"pretrained": assets["ckpt"], "attn_implementation": "sdpa", "max_frames_num": 8,
              "conv_template": "qwen_1_5", "model_name": "llava_qwen"}
    builtin = Llava_OneVision(device="cpu", device_map="auto", **common)
    ours = AOTLlavaOneVision(device="cpu", compression="none", **common)
    video = assets["videos"][1]
    b_calls, o_calls = _capture(builtin), _capture(ours)
    b_answer = builtin.generate_until(_requests(builtin, [video]))
    o_answer = ours.generate_until(_requests(ours, [video]))
    (b_args, b_kw), (o_args, o_kw) = b_calls[0], o_calls[0]
    assert torch.equal(b_args[0].cpu(), o_args[0].cpu())  # prompt ids: same template, same <image> placement
    assert torch.equal(b_kw["images"][0], o_kw["images"][0])  # frames: same indices, preprocessing, dtype
    assert o_kw["modalities"] == ["video"]
    assert isinstance(o_answer[0], GenerationResult)
    assert o_answer[0].text == b_answer[0]


def test_vid_matches_the_builtin(assets):
    """llava_vid: 1 fps sampling capped at max_frames_num, force_sample, time instruction."""
    from lmms_eval.models.simple.llava_vid import LlavaVid

    common = {"pretrained": assets["grid"], "attn_implementation": "sdpa", "conv_template": "qwen_1_5",
              "mm_spatial_pool_mode": "average", "mm_newline_position": "grid"}
    for extra in ({"max_frames_num": 64, "add_time_instruction": True}, {"max_frames_num": 6, "force_sample": True}):
        builtin = LlavaVid(device="cpu", device_map="auto", **common, **extra)
        ours = AOTLlavaVid(device="cpu", compression="none", **common, **extra)
        video = assets["videos"][2]
        b_calls, o_calls = _capture(builtin), _capture(ours)
        b_answer = builtin.generate_until(_requests(builtin, [video]))
        o_answer = ours.generate_until(_requests(ours, [video]))
        (_, b_kw), (o_args, o_kw) = b_calls[0], o_calls[0]
        assert torch.equal(b_kw["inputs"].cpu(), o_args[0].cpu()), extra
        assert torch.equal(b_kw["images"][0], o_kw["images"][0]), extra
        assert o_answer[0].text == b_answer[0]
        frames = o_kw["images"][0].shape[0]
        assert frames == (6 if extra.get("force_sample") else 5)  # 40 frames at 8 fps: one frame a second


@pytest.mark.parametrize("compression", ["none", "paper_ov_10pct"])
def test_batches_answer_as_single_requests(assets, compression):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", compression=compression, max_frames_num=8,
                              torch_dtype="float32", model_name="llava_qwen")
    questions = ["What moves?", "Describe the colours of the video in detail please.", "Which way?"]
    single = [model.generate_until(_requests(model, [v], [q]))[0].text for v, q in zip(assets["videos"], questions)]
    model.batch_size_per_gpu = 3
    batched = model.generate_until(_requests(model, assets["videos"], questions))
    assert [r.text for r in batched] == single
    records = [r.token_counts.efficiency for r in batched]
    assert all(not r["failed"] and r["frames"] == 8 for r in records)
    if compression == "none":
        assert all(r["visual_tokens"] == r["visual_tokens_plain"] == 8 * 196 + 1 and r["retention"] == 1.0
                   for r in records)
    else:
        assert all(r["visual_tokens"] < r["visual_tokens_plain"] and 0 < r["retention"] < 1 for r in records)
        assert all(r["compression_ms"] > 0 for r in records)


def test_efficiency_fields_and_token_counts(assets):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", compression="paper_ov_10pct", max_frames_num=8,
                              torch_dtype="float32", model_name="llava_qwen")
    out = model.generate_until(_requests(model, assets["videos"][:1]))[0]
    counts = out.token_counts
    assert isinstance(counts, EfficiencyCounts)
    d = counts.to_dict()
    cfg = model.model.config
    stats = model.model.last_visual_stats[0]
    assert d["visual_tokens"] == stats.visual_tokens == stats.result.num_tokens
    assert d["retention"] == pytest.approx(stats.retention)
    assert d["prefill_tflops"] == pytest.approx(eff.prefill_tflops(stats.visual_tokens, cfg))
    text_tokens = d["input_tokens"] - d["visual_tokens"]
    assert 20 < text_tokens < 200  # the chat template and the question
    assert d["input_tokens"] == counts.input_tokens and 1 <= d["output_tokens"] <= GEN["max_new_tokens"]
    assert d["ttft_ms"] >= d["vision_ms"] > 0 and d["peak_memory_mb"] > 0
    assert d["stage_tokens"]["output"] == d["visual_tokens"]
    assert model.records[-1] == counts.efficiency


def test_bad_videos_fail_alone_and_are_counted(assets):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", compression="paper_ov_10pct", max_frames_num=8,
                              torch_dtype="float32", model_name="llava_qwen", batch_size=4)
    videos = [assets["videos"][0], assets["missing"], assets["corrupt"], assets["videos"][1]]
    out = model.generate_until(_requests(model, videos))
    failed = [r.token_counts.efficiency["failed"] for r in out]
    assert failed == [False, True, True, False]
    assert out[1].text == "" and out[2].text == ""
    assert "missing.mp4" in out[1].token_counts.efficiency["error"]
    assert "corrupt.mp4" in out[2].token_counts.efficiency["error"]
    assert out[1].token_counts.input_tokens is None  # lmms-eval's own token accounting skips failed samples
    assert out[0].text and out[3].text is not None


def test_summary_from_process_records(assets, tmp_path):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", compression="paper_ov_10pct", max_frames_num=8,
                              torch_dtype="float32", model_name="llava_qwen", batch_size=2)
    model.generate_until(_requests(model, [assets["videos"][0], assets["missing"]]))
    results = tmp_path / "2026-01-01T00-00-00.000000_results.json"
    config = {"model": "aot_llava_onevision", "model_args": "pretrained=x,compression=paper_ov_10pct"}
    results.write_text(json.dumps({"config": config, "results": {"t": {"acc,none": 0.5, "acc_stderr,none": 0.1}}}))
    records = model.records
    model.clean()   # lmms-eval's evaluate() ends a run so: the run's records move to last_run
    assert model.last_run == records and model.records == []
    path = eff.write_run_summary(results, model.last_run)
    summary = json.loads(path.read_text())
    assert path.name == "2026-01-01T00-00-00.000000_aot_efficiency.json"
    assert summary["source"] == "records" and summary["compression"] == "paper_ov_10pct"
    task = summary["tasks"]["t"]
    assert (task["samples"], task["failed"], task["failed_doc_ids"]) == (2, 1, [1])
    assert task["scores"] == {"acc,none": 0.5}
    assert task["visual_tokens_mean"] == records[0]["visual_tokens"]
    table = eff.format_summary(summary)
    assert "| t | paper_ov_10pct | acc,none 0.5 | 2 | 1 |" in table and "scored as wrong" in table


def test_multi_round_is_refused_clearly(assets):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", max_frames_num=4, model_name="llava_qwen")
    with pytest.raises(NotImplementedError, match="single-round"):
        model.generate_until_multi_round([])


def test_loglikelihood_matches_the_builtin(assets):
    from lmms_eval.models.simple.llava_onevision import Llava_OneVision

    common = {"pretrained": assets["ckpt"], "attn_implementation": "sdpa", "max_frames_num": 8,
              "conv_template": "qwen_1_5", "model_name": "llava_qwen"}
    builtin = Llava_OneVision(device="cpu", device_map="auto", **common)
    builtin.metadata = {}  # read by the built-in's loglikelihood, never set by lmms-eval 0.7.3
    ours = AOTLlavaOneVision(device="cpu", compression="none", **common)
    out = {}
    for name, model in (("builtin", builtin), ("ours", ours)):
        model.task_dict = {"t": {"test": {0: {"video": assets["videos"][0]}}}}
        requests = [
            Instance(request_type="loglikelihood",
                     arguments=("What moves?", target, lambda doc: [doc["video"]], 0, "t", "test"),
                     idx=i, metadata={"task": "t", "doc_id": 0, "repeats": 1})
            for i, target in enumerate(["A square.", "B"])
        ]
        out[name] = model.loglikelihood(requests)
    for (b_loss, b_greedy), (o_loss, o_greedy) in zip(out["builtin"], out["ours"]):
        assert o_loss == pytest.approx(b_loss, rel=1e-4) and o_greedy == b_greedy


def test_a_failed_loglikelihood_request_fails_alone(assets):
    model = AOTLlavaOneVision(pretrained=assets["ckpt"], device="cpu", compression="none", max_frames_num=8,
                              torch_dtype="float32", model_name="llava_qwen")
    model.task_dict = {"t": {"test": {0: {"video": assets["videos"][0]}, 1: {"video": assets["missing"]}}}}
    requests = [
        Instance(request_type="loglikelihood",
                 arguments=("What moves?", "A square.", lambda doc: [doc["video"]], doc, "t", "test"),
                 idx=doc, metadata={"task": "t", "doc_id": doc, "repeats": 1})
        for doc in (0, 1)
    ]
    (ok, ok_greedy), (bad, bad_greedy) = model.loglikelihood(requests)
    assert ok == ok and ok != float("-inf")
    assert bad == float("-inf") and bad_greedy is False
    (record,) = model.records
    assert record["failed"] and record["doc_id"] == 1 and "missing.mp4" in record["error"]

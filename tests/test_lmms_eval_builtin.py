"""lmms-eval's built-in ``llava_onevision`` adapter runs unchanged on this package (CPU, tiny
checkpoint). Skipped where lmms-eval is not installed (it comes with the ``eval`` extra)."""

from __future__ import annotations

import pytest

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.models.simple.llava_onevision import Llava_OneVision  # noqa: E402

from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402
from llava.video import write_synthetic_video  # noqa: E402


@pytest.mark.parametrize("compression", [None, "paper_ov_10pct"])
def test_builtin_llava_onevision_generates(tmp_path, compression):
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    video = write_synthetic_video(tmp_path / "v.mp4", frames=40)
    # single process: the adapter honours `device` only with device_map="auto" (its CPU path)
    model = Llava_OneVision(pretrained=str(ckpt), device="cpu", device_map="auto", attn_implementation="sdpa",
                            max_frames_num=8, conv_template="qwen_1_5", model_name="llava_qwen")
    if compression:
        model.model.set_compression(compression)
    model.task_dict = {"smoke": {"test": {0: {}}}}
    request = Instance(request_type="generate_until",
                       arguments=("<image>\nWhat moves?", {"max_new_tokens": 4, "until": ["<|im_end|>"]},
                                  lambda doc: [str(video)], 0, "smoke", "test"),
                       idx=0, metadata={"task": "smoke", "doc_id": 0, "repeats": 1})
    answers = model.generate_until([request])
    assert len(answers) == 1 and isinstance(answers[0], str)
    stats = model.model.last_visual_stats[0]
    assert stats.frames == 8
    assert stats.visual_tokens == (8 * 196 + 1 if compression is None else stats.result.num_tokens)

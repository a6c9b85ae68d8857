"""The end-to-end benchmark runs through its CLI on tiny widths and reports every model and retention with
its accounting (no timing assertions); impossible shapes and unknown models are refused by name."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import e2e


@pytest.mark.slow
def test_quick_run_reports_every_model_and_retention(tmp_path, capsys):
    out = tmp_path / "e.json"
    report = e2e.main(["--quick", "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    stdout = capsys.readouterr().out
    assert stdout.count(e2e.HEADER) == 3 and "(scaled: 1 of 2 tower layers" in stdout
    by_model = {m["model"]: m for m in report["models"]}
    assert set(by_model) == {"llava_ov_7b", "llava_video_7b", "qwen2_5_vl_7b"}
    for m in by_model.values():
        rows = m["rows"]
        assert [r["retention"] for r in rows] == list(e2e.RETENTIONS)
        # a CPU times one block per stack; Qwen2.5-VL's tower two (windowed and full attention: all of the quick tower)
        vision = 1.0 if m["model"] == "qwen2_5_vl_7b" else 2.0
        assert m["scaled"] and m["scale"] == {"vision": vision, "llm": 2.0}
        full = rows[0]
        assert full["compression_ms"] == full["capture_ms"] == 0 and full["ttft_ratio"] == 1.0
        for r in rows:
            parts = sum(r[k] for k in ("tower_ms", "capture_ms", "compression_ms", "projector_ms", "prefill_ms",
                                       "first_token_ms"))
            assert math.isclose(r["ttft_ms"], parts) and r["prompt_tokens"] == r["visual_tokens"] + 64
            assert math.isclose(r["ttft_ratio"], full["ttft_ms"] / r["ttft_ms"])
            # a decode step over the prompt's cache: the scaled LLM step plus the head, its ratio to full tokens
            step = r["measured"]["decode_step"]["median_ms"]
            assert r["decode_ms_per_token"] > 0 and math.isclose(
                r["decode_ms_per_token"], step * m["scale"]["llm"] + m["head"]["median_ms"])
            assert math.isclose(r["decode_ratio"], full["decode_ms_per_token"] / r["decode_ms_per_token"])
        # the visual tokens are the compression's own count on the model's layout
        assert [r["visual_tokens"] for r in rows[1:]] == sorted((r["visual_tokens"] for r in rows[1:]), reverse=True)
        assert rows[1]["visual_tokens"] < full["visual_tokens"]
    # 2 frames of 27 x 27: OV pools to 14 x 14 plus one newline, LLaVA-Video to 13 x 13 with a newline per row
    assert by_model["llava_ov_7b"]["rows"][0]["visual_tokens"] == 2 * 196 + 1
    assert by_model["llava_video_7b"]["rows"][0]["visual_tokens"] == 2 * 13 * 14
    # Qwen2.5-VL: 2 frames of 224 px are one temporal token of 8 x 8 merged tokens, no newline, no projector
    qwen = by_model["qwen2_5_vl_7b"]
    assert qwen["rows"][0]["visual_tokens"] == 64 and qwen["projector"]["median_ms"] == 0.0


def test_a_shape_the_machine_cannot_hold_is_refused_before_allocating(capsys):
    with pytest.raises(SystemExit):
        e2e.main(["--device", "cpu", "--models", "llava_ov_7b", "--frames", "4000", "--layers", "28"])
    assert "needs about" in capsys.readouterr().err


def test_unknown_model_shape_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        e2e.main(["--models", "llava_13b"])
    expected = "model shape 'llava_13b' is unknown; expected one of ['llava_ov_7b', 'llava_video_7b', 'qwen2_5_vl_7b']"
    assert expected in capsys.readouterr().err


def test_gpu_script_needs_only_torch_transformers_and_the_repository():
    """scripts/bench/gpu.sh runs two modules; they import none of the optional stacks (a GPU machine may
    have only torch and transformers), and without a GPU the script stops at once, saying why."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, benchmarks.e2e, benchmarks.compression; "
            "print(sorted(m for m in ('lmms_eval', 'decord', 'av', 'accelerate', 'deepspeed', 'peft', 'qwen_vl_utils', "
            "'matplotlib', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    script = (root / "scripts" / "bench" / "gpu.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n#") and "benchmarks.e2e --device cuda" in script
    import torch

    if not torch.cuda.is_available():
        run = subprocess.run(["bash", "scripts/bench/gpu.sh", "/tmp/aot-gpu-bench-test"], cwd=root, capture_output=True,
                             text=True, timeout=300, env={**__import__("os").environ, "PYTHON": sys.executable})
        assert run.returncode != 0 and "no CUDA device" in run.stderr

"""The README's API example runs as written, and its two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has a python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    out, outs = scope["out"], scope["outs"]
    assert out.tokens.shape[1] == 3584 and 0.05 < out.retention < 0.15
    assert len(outs) == 2 and outs[0].tokens.shape == out.tokens.shape


def test_two_commands_first_and_ci_uses_the_test_one():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0].strip().splitlines()
    main_job, tests = (c.split("#")[0].strip() for c in commands[:2])
    assert main_job.endswith("bash scripts/eval/smoke.sh")  # run end to end by test_smoke_eval.py
    assert main_job.startswith("bash scripts/setup.sh && ") and tests.startswith("bash scripts/setup.sh && ")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_llava_example_runs_on_the_tiny_checkpoint(tmp_path):
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
    from llava.video import write_synthetic_video

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    code = next(b for b in blocks if "load_pretrained_model" in b)
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    video = write_synthetic_video(tmp_path / "clip.mp4", frames=40)
    code = code.replace('"lmms-lab/llava-onevision-qwen2-7b-ov"', repr(str(ckpt))).replace(
        '"clip.mp4"', repr(str(video))
    )
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    stats = scope["model"].last_visual_stats[0]
    assert stats.frames == 32 and 0 < stats.retention < 0.2

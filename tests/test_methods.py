"""Every method behind one interface: names, configs, presets, exact budgets, sequence layout, masks.

CPU, small feature widths, the real 27x27 grid. Videos: the golden structured OV video (sliced to the
frame count), a random one and a random one with a static background.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as Fn
from conftest import load_golden

import visionzip as vz
from benchmarks import compression as bench

GRID = (27, 27)
N = 729
METHODS = vz.list_methods()
BASELINES = [m for m in METHODS if m != "aot"]
RETENTIONS = (0.10, 0.15, 0.20, 0.25)
FRAMES = (8, 16, 32)
BASELINE_PRESETS = ("visionzip_10pct", "fastvid_10pct", "dycoke_10pct", "pool_10pct", "random_10pct")


def _cfg(method: str, retention: float | None, **overrides):
    return vz.make_config(method, retention=None if method == "full" else retention, **overrides)


def _target(method: str, retention: float) -> float:
    return 1.0 if method == "full" else retention


def videos(frames: int, d: int = 32):
    """[(features (F, N, D), shallow (F, N), deep (F, N))]: golden, random, static background."""
    _, g = load_golden("ov_32f_k126_q0.3")
    golden = (g["features"][:frames], g["shallow_scores"][:frames], g["deep_scores"][:frames])
    gen = torch.Generator().manual_seed(0)
    rnd = (
        torch.randn(frames, N, d, generator=gen), torch.rand(frames, N, generator=gen),
        torch.rand(frames, N, generator=gen),
    )
    gen = torch.Generator().manual_seed(1)
    background = torch.randn(1, N, d, generator=gen)  # (1, N, D), shared by every frame
    static = (
        background + 0.05 * torch.randn(frames, N, d, generator=gen),
        torch.rand(frames, N, generator=gen),
        torch.rand(frames, N, generator=gen),
    )
    return [golden, rnd, static]


def plain_sequence(x: torch.Tensor, *, mode: str, newline_position: str, newline: torch.Tensor | None) -> torch.Tensor:
    """LLaVA-NeXT without compression, written independently of visionzip (NCHW pooling)."""
    f_, _, d = x.shape
    h, w = GRID
    nchw = x.view(f_, h, w, d).permute(0, 3, 1, 2).contiguous()
    if mode == "bilinear":
        pooled = Fn.interpolate(nchw, size=(math.ceil(h / 2), math.ceil(w / 2)), mode="bilinear", align_corners=False)
    else:
        pooled = Fn.avg_pool2d(nchw, 2)
    ph = pooled.shape[-2]
    rows = pooled.permute(0, 2, 3, 1)  # (F, ph, pw, D)
    if newline_position == "grid":
        rows = torch.cat([rows, newline.expand(f_, ph, 1, d)], dim=2)
    out = rows.reshape(-1, d)
    if newline_position == "one_token" and newline is not None:  # LLaVA-NeXT: one newline after the video
        out = torch.cat([out, newline[None]])
    return out


# --------------------------------------------------------------------------------------------------
# names, configs, presets


@pytest.mark.parametrize("method", METHODS)
def test_make_config_every_method(method):
    cfg = _cfg(method, 0.15)
    assert cfg.method == method
    assert isinstance(cfg, vz.config_class(method)) and vz.method_of(cfg) is vz.get_method(method)
    assert vz.get_method(method).scores == {"aot": "shallow_deep", "visionzip": "deep"}.get(method, "none")
    for name in ("pool_mode", "pool_stride", "newline_position"):
        assert getattr(cfg, name) is None, name  # the layout comes from the model
    for name in ("shallow_layer", "deep_layer"):
        assert getattr(cfg, name) == getattr(vz.AOTConfig(), name), name  # defaults shared with AOT
    if method == "aot":
        assert cfg.token_budget == 0.15
    else:
        assert cfg.retention == _target(method, 0.15)
    # overrides on top, validated, round trip through dict and YAML form
    changed = _cfg(method, 0.15, pool_mode="average", newline_position="grid")
    assert changed.pool_mode is vz.PoolMode.AVERAGE and changed.newline_position is vz.NewlinePosition.GRID
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert cfg.replace() == cfg


def test_make_config_errors():
    with pytest.raises(ValueError, match="retention"):
        vz.make_config("pool")
    with pytest.raises(ValueError, match="retention"):
        vz.make_config("full", retention=0.5)
    with pytest.raises(ValueError, match="retention"):
        vz.make_config("random", retention=1.5)
    with pytest.raises(ValueError, match="retention"):
        vz.make_config("aot", retention=0.0)
    with pytest.raises(ValueError, match="seed"):
        vz.make_config("random", retention=0.1, seed=-1)
    with pytest.raises(ValueError, match="window"):
        vz.make_config("dycoke", retention=0.1, window=0)
    with pytest.raises(ValueError, match="pool_mode"):
        vz.make_config("visionzip", retention=0.1, pool_mode="maximum")
    with pytest.raises(ValueError, match="unknown VisionZipConfig key"):
        vz.VisionZipConfig.from_dict({"retention": 0.1, "bogus": 1})


@pytest.mark.parametrize("call", [
    lambda: vz.make_config("fastv", retention=0.1),
    lambda: vz.load_config("fastv@0.1"),
    lambda: vz.config_class("tome"),
])
def test_unknown_method_lists_choices(call):
    with pytest.raises(ValueError, match="expected one of") as err:
        call()
    for name in METHODS:
        assert repr(name) in str(err.value)


def test_unknown_method_in_yaml(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("method: tome\nretention: 0.1\n")
    with pytest.raises(ValueError, match="'tome'") as err:
        vz.load_config(path)
    assert str(path) in str(err.value) and "'fastvid'" in str(err.value)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("retention", ["0.15", "0.1"])
def test_load_config_method_at_retention(method, retention):
    spec = "full" if method == "full" else f"{method}@{retention}"
    assert vz.load_config(spec) == _cfg(method, float(retention))


def test_load_config_specials():
    assert vz.load_config("full") == vz.FullConfig()
    assert vz.load_config("aot@0.10").token_budget == 0.10
    assert vz.load_config("aot") == vz.AOTConfig()
    cfg = vz.make_config("dycoke", retention=0.2)
    assert vz.load_config(cfg) is cfg
    with pytest.raises(ValueError, match="retention"):
        vz.load_config("pool@ten")


@pytest.mark.parametrize("name", vz.list_presets(None))
def test_every_preset_of_every_method_loads(name, tmp_path):
    cfg = vz.get_preset(name)
    assert isinstance(cfg, vz.MethodConfig) and vz.method_of(cfg).name == cfg.method
    assert vz.load_config(name) == cfg
    path = vz.presets_dir() / f"{name}.yaml"
    assert vz.load_config(path) == cfg and vz.load_config(str(path)) == cfg
    text = path.read_text()
    assert text.startswith("#") and f"python -m benchmarks.compression --presets {name}" in text
    assert name in vz.list_presets(cfg.method)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert vz.load_config(tmp_path / "c.yaml") == cfg


def test_baseline_presets():
    assert set(BASELINE_PRESETS) <= set(vz.list_presets(None))
    assert not set(BASELINE_PRESETS) & set(vz.list_presets())  # the default listing stays AOT's
    for name in BASELINE_PRESETS:
        cfg = vz.get_preset(name)
        assert cfg.retention == 0.1 and cfg.method == name.split("_")[0]
    for name in vz.list_presets():
        cfg = vz.get_preset(name)
        if name.startswith("qwen_vl_"):  # the Qwen tables' presets: the exact-budget "aot@r" written out
            assert cfg == vz.load_config(f"aot@{cfg.token_budget}")
        else:
            assert cfg.token_budget is None  # faithful presets: the release's mode


def test_bench_accepts_baseline_presets(tmp_path):
    report = bench.main(["--quick", "--device", "cpu", "--frames", "8", "--presets", ",".join(BASELINE_PRESETS),
                         "--json", str(tmp_path / "b.json")])
    assert [r["config"] for r in report["results"]] == list(BASELINE_PRESETS)
    for r in report["results"]:
        assert abs(r["retention"] - 0.1) <= 0.01 and r["output_tokens"] > 0 and r["method"] != "aot"
        assert r["products"] is None and r["products_ratio"] is None  # the two OT products are AOT's


# --------------------------------------------------------------------------------------------------
# budgets


@pytest.mark.parametrize("frames", FRAMES)
@pytest.mark.parametrize("method", METHODS)
def test_budget_accuracy(method, frames):
    for x, s, t in videos(frames):
        for r in RETENTIONS:
            cfg = _cfg(method, r)
            res = vz.compress_video(x, s, t, config=cfg, grid=GRID)
            target = _target(method, r)
            assert abs(res.retention - target) <= 0.01, (method, frames, r, res.retention)
            budget = round(target * frames * 196)
            if method == "pool":
                grids = vz.pool_grids_for(r, (14, 14), frames)
                sizes = sorted({a * c for a, c in grids})
                assert res.num_tokens == sum(a * c for a, c in grids)
                assert abs(res.num_tokens - budget) <= (sizes[-1] - sizes[0]) / 2
            elif method == "aot" and frames == cfg.num_clips:
                assert abs(res.num_tokens - budget) <= 1  # double keyframe emission, odd budget
            else:
                assert res.num_tokens == budget, (method, frames, r)
            assert res.stage_tokens["input"] == frames * N and res.stage_tokens["output"] == res.num_tokens
            if method == "full":
                break


@pytest.mark.parametrize("cells,grid", [(196, (14, 14)), (169, (13, 13))])
@pytest.mark.parametrize("frames", FRAMES)
def test_pool_grids_within_a_point_everywhere(cells, grid, frames):
    for pct in range(5, 101):
        grids = vz.pool_grids_for(pct / 100, grid, frames)
        assert len(grids) == frames and len(set(grids)) <= 2
        assert abs(sum(a * c for a, c in grids) / (frames * cells) - pct / 100) <= 0.01, (pct, grids)
        assert all(0.5 <= (a / grid[0]) / (c / grid[1]) <= 2.0 for a, c in grids)
    assert vz.pool_grid_for(0.10, (14, 14)) == (5, 4) and vz.pool_grid_for(0.25, (14, 14)) == (7, 7)


@pytest.mark.parametrize("method", METHODS)
def test_budget_grid_newlines_video_layout(method):
    # LLaVA-Video layout: average pooling (13x13), a newline after every row; newlines excluded
    frames, nl = 16, torch.randn(32, generator=torch.Generator().manual_seed(5))
    for x, s, t in videos(frames)[1:]:
        for r in (0.10, 0.25):
            cfg = _cfg(method, r, pool_mode="average", newline_position="grid")
            res = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
            assert abs(res.retention - _target(method, r)) <= 0.01, (method, r, res.retention)
            if method not in ("pool", "full"):
                assert res.num_tokens - frames * 13 == round(r * frames * 169)


@pytest.mark.parametrize("frames", [16, 32])
@pytest.mark.parametrize("layout", ["one_token", "grid"])
def test_aot_exact_mode_hits_the_budget_exactly(frames, layout):
    nl = torch.randn(32, generator=torch.Generator().manual_seed(6))
    over = {} if layout == "one_token" else {"pool_mode": "average", "newline_position": "grid"}
    cells = 196 if layout == "one_token" else 169
    for x, s, t in videos(frames):
        for r in RETENTIONS + (0.07, 0.33):
            for emit in ("paper", "merged_once"):
                cfg = vz.make_config("aot", retention=r, keyframe_emit=emit, **over)
                res = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
                newlines = res.stage_tokens["newlines"]
                assert res.num_tokens - newlines == round(r * frames * cells), (r, emit, res.num_tokens)
    # the inter-frame stage off: exact too
    x, s, t = videos(frames)[1]
    cfg = vz.make_config("aot", retention=0.2, inter_frame=False)
    assert vz.compress_video(x, s, t, config=cfg, grid=GRID).num_tokens == round(0.2 * frames * 196)


def test_aot_default_mode_unchanged_by_token_budget_field():
    x, s, t = videos(32)[0]
    cfg = vz.get_preset("paper_ov_10pct")
    assert cfg.token_budget is None
    res = vz.compress_video(x, s, t, config=cfg, grid=GRID)
    _, g = load_golden("ov_32f_k126_q0.3")
    assert res.tokens.shape == g["tokens"].shape  # the release's count (values: test_golden)
    assert torch.equal(res.merged_mask, ~res.kept_mask)


@pytest.mark.parametrize("pct", range(5, 101, 5))
@pytest.mark.parametrize("mode", ["bilinear", "average"])
def test_calibrate_aot(pct, mode):
    # the release's two layouts at the frames and keep ratios it ran them with
    layout = vz.VideoLayout(frames=32 if mode == "bilinear" else 64, grid=GRID, pool_mode=mode,
                            newline_position="one_token" if mode == "bilinear" else "grid")
    want_keep = 0.3 if mode == "bilinear" else 0.4
    k, keep = vz.calibrate_aot(pct / 100, layout, keep_ratio=want_keep)
    if pct == 100:
        assert (k, keep) == (N, 1.0)  # the identity: every token an anchor
    else:
        assert k % 18 == 0 and 18 <= k <= 720
    assert 0.0 <= keep <= 1.0
    if pct <= 50:
        assert keep == want_keep
    assert vz.make_config("aot", retention=pct / 100, layout=layout, keep_ratio=want_keep).num_anchors == k
    deferred = vz.make_config("aot", retention=pct / 100)
    assert deferred.num_anchors is None and deferred.token_budget == pct / 100  # calibrated per video


def test_calibrate_aot_monotone_and_near_the_presets():
    ov = vz.VideoLayout(frames=32, grid=GRID)
    ks = [vz.calibrate_aot(p / 100, ov)[0] for p in range(5, 60)]
    assert ks == sorted(ks)
    # same rule as the hand-calibrated presets, up to the release's data-dependent pooled count
    for name, r in (("paper_ov_10pct", 0.10), ("ov_15pct", 0.15), ("ov_20pct", 0.20), ("ov_25pct", 0.25)):
        assert abs(vz.calibrate_aot(r, ov)[0] - vz.get_preset(name).num_anchors) <= 54


@pytest.mark.parametrize("grid,window,step", [
    ((27, 27), 9, 18), ((14, 14), 9, 2), ((18, 27), 9, 12),
    # window None: chosen from the grid (3 windows along the shorter side, at least 2 tokens wide)
    ((27, 27), None, 18), ((16, 16), None, 18), ((8, 8), None, 32), ((4, 6), None, 12),
])
def test_anchor_multiple_follows_the_grid(grid, window, step):
    # anchors are counted in steps that split the local budget evenly over the frame's windows
    layout = vz.VideoLayout(frames=8, grid=grid, pool_mode="none", newline_position="no_token")
    from visionzip.budget import anchor_multiple

    assert anchor_multiple(layout, window=window) == step
    k, _ = vz.calibrate_aot(0.2, layout, num_clips=4, window=window)
    assert k % step == 0 and 1 <= k <= grid[0] * grid[1]


@pytest.mark.parametrize(
    "grid,window", [((27, 27), 9), ((16, 16), 5), ((12, 20), 4), ((8, 8), 2), ((4, 6), 2), ((1, 5), 1)]
)
def test_window_chosen_from_the_grid(grid, window):
    from visionzip.anchors import resolve_window

    assert resolve_window(None, grid) == window
    assert resolve_window(3, (3, 9)) == 3


def test_window_larger_than_the_grid_is_refused_naming_both():
    layout = vz.VideoLayout(frames=4, grid=(4, 6), pool_mode="none", newline_position="no_token")
    feats = torch.randn(4, 24, 8)
    scores = torch.rand(4, 24)
    cfg = vz.make_config("aot", retention=0.5, window=9)
    expect = r"window=9 does not fit the 4x6 grid of the video; expected an integer in \[1, 4\]"
    with pytest.raises(ValueError, match=expect):
        vz.compress_video(feats, scores, scores, config=cfg, layout=layout)
    # the default for "aot@r" chooses the window from the grid, so the same video compresses
    res = vz.compress_video(feats, scores, scores, config=vz.make_config("aot", retention=0.5), layout=layout)
    assert res.tokens.shape[0] == 48


def test_make_config_aot_overrides_win():
    cfg = vz.make_config("aot", retention=0.1, num_anchors=144)
    assert (cfg.num_anchors, cfg.token_budget) == (144, 0.1)


# --------------------------------------------------------------------------------------------------
# sequence layout, masks


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tokens_shape_and_dtype(method, dtype):
    x, s, t = videos(8)[1]
    res = vz.compress_video(x.to(dtype), s, t, config=_cfg(method, 0.2), grid=GRID)
    assert res.tokens.dtype == dtype and res.tokens.shape[1] == x.shape[2]
    assert torch.isfinite(res.tokens.float()).all()


@pytest.mark.parametrize("layout", ["bilinear", "average"])
def test_full_is_llava_plain_sequence(layout):
    x, s, t = videos(8)[1]
    nl = torch.randn(32)
    position = "one_token" if layout == "bilinear" else "grid"
    cfg = vz.make_config("full", pool_mode=layout, newline_position=position)
    res = vz.compress_video(x, None, None, config=cfg, grid=GRID, image_newline=nl)
    assert torch.equal(res.tokens, plain_sequence(x, mode=layout, newline_position=position, newline=nl))
    assert res.retention == 1.0 and res.kept_mask.all() and not res.merged_mask.any()
    # the same tensor as AOT with every token an anchor and the exact keep rule at keep ratio 1
    aot = vz.AOTConfig(
        pool_mode=layout, newline_position=position, num_anchors=N, anchor_budget="exact", keep_ratio=1.0,
        inter_keep="exact", keyframe_emit="merged_once", num_clips=4, one_token_newline="append",
    )
    assert torch.equal(vz.compress_video(x, s, t, config=aot, grid=GRID, image_newline=nl).tokens, res.tokens)
    # and aot@1.0 is exactly that identity
    identity = vz.make_config("aot", retention=1.0).replace(pool_mode=layout, newline_position=position)
    assert torch.equal(vz.compress_video(x, s, t, config=identity, grid=GRID, image_newline=nl).tokens, res.tokens)
    paper = cfg.replace(one_token_newline="paper")
    dropped = vz.compress_video(x, None, None, config=paper, grid=GRID, image_newline=nl)
    if position == "one_token":  # the release's quirk drops the trailing newline
        assert torch.equal(res.tokens[-1], nl) and torch.equal(dropped.tokens, res.tokens[:-1])
        assert dropped.retention == 1.0


@pytest.mark.parametrize("method", BASELINES)
def test_newline_positions(method):
    frames, d = 8, 32
    x, s, t = videos(frames)[2]
    nl = torch.full((d,), 7.0)  # no feature is ever this vector
    base = _cfg(method, 0.15, pool_mode="average")
    flat = vz.compress_video(x, s, t, config=base, grid=GRID)
    grid = vz.compress_video(x, s, t, config=base.replace(newline_position="grid"), grid=GRID, image_newline=nl)
    is_nl = (grid.tokens == nl).all(-1)
    assert torch.equal(grid.tokens[~is_nl], flat.tokens)  # same tokens, newlines added
    # newline after every row of every frame: its index = tokens of the rows up to it + earlier newlines
    if method == "pool":
        grids = vz.pool_grids_for(0.15, (13, 13), frames)
        per_row = torch.cat([torch.full((a,), c) for a, c in grids])
    else:
        per_row = grid.kept_mask.view(frames, 13, 13).sum(-1)  # (F, rows)
    expect = torch.cumsum(per_row.reshape(-1) + 1, 0) - 1
    assert torch.equal(torch.nonzero(is_nl).flatten(), expect)
    # one_token: nothing appended as released, one newline at the end with "append"
    app = vz.compress_video(x, s, t, config=base.replace(one_token_newline="append"), grid=GRID, image_newline=nl)
    assert torch.equal(app.tokens[:-1], flat.tokens) and torch.equal(app.tokens[-1], nl)
    assert app.retention == flat.retention and app.stage_tokens["newlines"] == 1
    with pytest.raises(ValueError, match="image_newline"):
        vz.compress_video(x, s, t, config=base.replace(newline_position="grid"), grid=GRID)


@pytest.mark.parametrize("method", METHODS)
def test_masks_partition(method):
    frames = 16
    for x, s, t in videos(frames):
        res = vz.compress_video(x, s, t, config=_cfg(method, 0.1), grid=GRID)
        assert res.kept_mask.shape == res.merged_mask.shape == (frames, 196) == res.kept_grid.shape
        assert res.kept_mask.dtype == res.merged_mask.dtype == torch.bool
        assert not (res.kept_mask & res.merged_mask).any()
        assert res.pooled_grid == (14, 14)
        if method == "aot":
            assert res.anchor_mask.shape == (frames, N)
            assert torch.equal(res.merged_mask, ~res.kept_mask)
        else:
            assert res.anchor_mask is None
        if method not in ("aot", "pool"):
            assert int(res.kept_mask.sum()) == res.num_tokens  # one token per kept position
        if method in ("visionzip", "dycoke", "fastvid"):  # merging methods at 10 %: nothing dropped
            assert bool((res.kept_mask | res.merged_mask).all())
        if method == "random":
            assert not res.merged_mask.any()
            assert torch.equal(res.kept_mask.sum(-1).max() - res.kept_mask.sum(-1).min(), torch.tensor(1))
        if method == "fastvid":
            assert sum(res.segments) == frames and len(res.segments) >= 8
    # AOT with grid newlines: masks over the pre-inter sequence as released, grid view (F, n)
    nl = torch.randn(32)
    x, s, t = videos(frames)[1]
    res = vz.compress_video(x, s, t, config=vz.get_preset("video_25pct"), grid=GRID, image_newline=nl)
    assert res.kept_mask.shape == (frames, 13 * 14) and res.kept_grid.shape == res.merged_grid.shape == (frames, 169)


def test_visionzip_dominant_tokens_are_the_most_attended():
    frames = 4
    x, s, t = videos(frames)[1]
    res = vz.compress_video(x, s, t, config=vz.make_config("visionzip", retention=0.25), grid=GRID)
    pooled_scores = vz.pool_frames(t[..., None], torch.ones(frames, N, dtype=torch.bool), grid=GRID)[0][..., 0]
    b = 49  # 0.25 x 196 per frame
    dominant = b - round(b * 10 / 64)
    top = pooled_scores.topk(dominant, dim=-1).indices
    assert res.kept_mask.gather(1, top).all()
    assert res.stage_tokens["dominant"] == frames * dominant


def test_dycoke_prunes_the_static_tokens_first():
    # frames repeat the first one except a moving patch: at 30 % TTM folds repeated tokens only
    frames, d = 8, 16
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, N, d, generator=gen).repeat(frames, 1, 1)
    x[:, :81] += torch.randn(frames, 81, d, generator=gen) * 3  # rows 0-2 change every frame
    res = vz.compress_video(x, None, None, config=vz.make_config("dycoke", retention=0.3), grid=GRID)
    later = [f for f in range(frames) if f % 4]
    changing = torch.zeros(196, dtype=torch.bool)
    changing[:28] = True  # pooled rows 0-1 (bilinear: source rows 0-3)
    assert res.kept_mask[[0, 4]].all()  # anchor frames whole
    assert not res.kept_mask[later][:, ~changing].any()


@pytest.mark.parametrize("method", ["random", "fastvid", "dycoke", "visionzip"])
def test_deterministic(method):
    x, s, t = videos(8)[1]
    cfg = _cfg(method, 0.15)
    a = vz.compress_video(x, s, t, config=cfg, grid=GRID)
    b = vz.compress_video(x, s, t, config=cfg, grid=GRID)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.kept_mask, b.kept_mask)
    if method == "random":
        c = vz.compress_video(x, s, t, config=cfg.replace(seed=1), grid=GRID)
        assert not torch.equal(a.kept_mask, c.kept_mask)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_each_video_alone(method):
    vids = videos(16)[1:]
    cfg = _cfg(method, 0.15)
    x = [v[0] for v in vids]
    x[1] = x[1][:12]
    s, t = [vids[0][1], vids[1][1][:12]], [vids[0][2], vids[1][2][:12]]
    batch = vz.compress_video(x, s, t, config=cfg, grid=GRID)
    assert isinstance(batch, list) and len(batch) == 2
    for i in range(2):
        alone = vz.compress_video(x[i], s[i], t[i], config=cfg, grid=GRID)
        assert torch.equal(batch[i].tokens, alone.tokens) and batch[i].retention == alone.retention
        assert torch.equal(batch[i].kept_mask, alone.kept_mask)
    stacked = vz.compress_video(torch.stack([vids[0][0], vids[1][0]]), torch.stack([vids[0][1], vids[1][1]]),
                                torch.stack([vids[0][2], vids[1][2]]), config=cfg, grid=GRID)
    assert torch.equal(stacked[1].tokens, vz.compress_video(*vids[1], config=cfg, grid=GRID).tokens)


@pytest.mark.parametrize("method", BASELINES)
def test_scores_none_when_not_needed(method):
    x, s, t = videos(8)[1]
    cfg = _cfg(method, 0.1)
    if vz.method_of(cfg).score_roles:
        with pytest.raises(ValueError, match="deep_scores|shallow_scores"):
            vz.compress_video(x, None, None, config=cfg, grid=GRID)
    else:
        res = vz.compress_video(x, None, None, config=cfg, grid=GRID)
        assert torch.equal(res.tokens, vz.compress_video(x, s, t, config=cfg, grid=GRID).tokens)


def test_bad_config_type():
    x, s, t = videos(8)[1]
    with pytest.raises(ValueError, match="config.*dict"):
        vz.compress_video(x, s, t, config={"method": "pool"}, grid=GRID)

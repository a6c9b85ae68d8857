"""AOT's intra stage: its reference implementation and its one faster path, behind one switch.

The reference pools the merged frames; the faster path (on a CPU in float32 with a linear pooling)
forms each frame's kept pooled cells by one product (``visionzip.intra.kept_cells``), and without
autograd builds the merge's weights in place on one (F, N, k) map. ``visionzip.reference_kernels()``
switches every faster path off. These tests check both against each other (float32: within 1e-5
relative, the masks identical) over pooling modes, newline positions, a Qwen-style layout without
pooling and batches of videos; the autograd path against the in-place one bit for bit; the rows alone
against the whole pooled result bit for bit; and the kept cells against LLaVA-NeXT's own pooling.
"""

from __future__ import annotations

import pytest
import torch

import visionzip as vz
import visionzip.intra as intra
from visionzip.layout import kept_with_newlines, newline_mask, newline_values, pool_mask
from visionzip.ops import front_indices, gather_rows

GRID = (27, 27)
N = 729
D = 24
TOL = 1e-5  # relative (Frobenius) error of the faster path against the reference, float32


def make_video(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, N, D, generator=g)
    shallow = torch.rand(frames, N, generator=g) + 0.01
    deep = torch.rand(frames, N, generator=g) + 0.01
    return x, shallow, deep, torch.randn(D, generator=g)


SETTINGS = {
    "bilinear_inter": vz.AOTConfig(num_anchors=126, num_clips=2, pool_mode="bilinear", newline_position="one_token"),
    "average_grid": vz.AOTConfig(num_anchors=180, inter_frame=False, pool_mode="average", newline_position="grid"),
    "average_grid_inter": vz.AOTConfig(num_anchors=180, num_clips=2, pool_mode="average", newline_position="grid"),
    "average_frame": vz.AOTConfig(num_anchors=90, inter_frame=False, pool_mode="average", newline_position="frame"),
    "none_budget": vz.AOTConfig(num_anchors=None, token_budget=0.2, window=None, pool_mode="none",
                                newline_position="no_token"),
    "max": vz.AOTConfig(num_anchors=108, num_clips=2, pool_mode="max", newline_position="one_token"),
}
#: every AOT preset on its own layout, plus aot@<r> on a Qwen-style layout (no pooling, no newline)
PRESETS = vz.list_presets()


def weights_for(x: torch.Tensor, mask: torch.Tensor) -> intra.IntraWeights:
    cfg = vz.AOTConfig()
    weights = intra.intra_weights(
        x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    assert weights is not None
    return weights


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def assert_fast_equals_reference(run) -> None:
    """``run()`` -> CompressionResult (or a list); under both settings: masks identical, tokens within
    TOL, and each result's plan replays its own tokens bit for bit under the setting that made it."""
    fast = run()
    with vz.reference_kernels():
        ref = run()
    fast, ref = (fast, ref) if isinstance(fast, list) else ([fast], [ref])
    for f, r in zip(fast, ref):
        assert torch.equal(f.anchor_mask, r.anchor_mask) and torch.equal(f.pooled_mask, r.pooled_mask)
        assert torch.equal(f.kept_mask, r.kept_mask) and f.stage_tokens == r.stage_tokens
        assert f.tokens.shape == r.tokens.shape and rel_err(f.tokens, r.tokens) < TOL


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_fast_path_equals_reference_on_every_layout(name):
    x, s, t, nl = make_video(5, seed=3)
    cfg = SETTINGS[name]
    calls = []
    real = intra.kept_cells
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(intra, "kept_cells", lambda *a, **k: calls.append(1) or real(*a, **k))
        fast = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
        linear_compact = cfg.pool_mode is not vz.PoolMode.MAX and not (name == "average_grid_inter")
        assert len(calls) == int(linear_compact)  # the faster path runs where it applies, once
        with vz.reference_kernels():
            ref = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
            assert len(calls) == int(linear_compact)  # never under the switch
            assert torch.equal(ref.plan.apply(x, nl), ref.tokens)
    assert torch.equal(fast.plan.apply(x, nl), fast.tokens)
    assert_fast_equals_reference(lambda: vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl))


@pytest.mark.parametrize("name", PRESETS)
def test_fast_path_equals_reference_for_every_preset(name):
    cfg = vz.get_preset(name)
    x, s, t, nl = make_video(16, seed=11)
    assert_fast_equals_reference(lambda: vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl))


@pytest.mark.parametrize("retention", [0.1, 0.25, 1.0])
def test_fast_path_equals_reference_on_a_qwen_style_layout_and_a_batch(retention):
    """Qwen-VL: the merger pooled already (no pooling, no newline); a batch of videos with different
    frame counts is compressed as each alone, under both settings."""
    cfg = vz.make_config("aot", retention)
    g = torch.Generator().manual_seed(5)
    videos = [torch.randn(f, 12 * 16, D, generator=g) for f in (4, 6)]
    scores = [torch.rand(v.shape[:2], generator=g) + 0.01 for v in videos]
    layouts = [vz.VideoLayout(frames=v.shape[0], grid=(12, 16), pool_mode="none", newline_position="no_token")
               for v in videos]
    assert_fast_equals_reference(lambda: vz.compress_video(videos, scores, scores, config=cfg, layout=layouts))
    if retention == 1.0:  # the identity holds under both settings
        for setting in (vz.reference_kernels, _fast):
            with setting():
                out = vz.compress_video(videos[0], scores[0], scores[0], config=cfg, layout=layouts[0])
            assert torch.equal(out.tokens, videos[0].reshape(-1, D))


class _fast:  # the default setting, as a context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_autograd_path_equals_the_no_grad_path(name, reference):
    """Bit for bit: a model's forward (grad enabled) must splice what compress_video gives under no_grad;
    no path writes into the features."""
    x, s, t, nl = make_video(3, seed=4)
    cfg = SETTINGS[name]
    with vz.reference_kernels() if reference else _fast():
        plain = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
        xg = x.clone().requires_grad_(True)
        graded = vz.compress_video(xg, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert torch.equal(graded.tokens.detach(), plain.tokens)
    graded.tokens.square().sum().backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all()) and bool(xg.grad.abs().sum() > 0)
    assert torch.equal(x, xg.detach())


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("position", [vz.NewlinePosition.GRID, vz.NewlinePosition.FRAME])
@pytest.mark.parametrize("seed", [0, 1])
def test_kept_with_newlines_equals_the_built_sequence(position, seed, compact):
    """The kept entries of the sequence with newlines, read from the pooled frames (or from their kept
    rows alone, ``compact``) without building the sequence; a frame that keeps nothing keeps its newlines."""
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(4, 13 * 13, D, generator=g)
    newline = torch.randn(D, generator=g)
    for mask in (torch.rand(4, 13 * 13, generator=g) < 0.3, torch.zeros(4, 13 * 13, dtype=torch.bool)):
        mask[2] = False
        expect = newline_values(pooled, newline, (13, 13), position)[newline_mask(mask, (13, 13), position)]
        given = gather_rows(pooled, front_indices(mask)[0]) if compact else pooled
        assert torch.equal(kept_with_newlines(given, newline, (13, 13), position, mask, compact=compact), expect)


def test_input_check_norms_are_the_features_norms():
    from visionzip.inputs import gather_inputs

    x, s, t, _ = make_video(2)
    kw = dict(config=vz.AOTConfig(), method="aot", score_roles=("shallow", "deep"), grid=GRID, image_newline=None,
              layout=None, question=None)
    videos, _ = gather_inputs(x, s, t, **kw)
    assert torch.equal(videos[0].norms, torch.linalg.vector_norm(x, dim=-1))
    x[1, 5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"features contains 1 NaN or inf value\(s\)"):
        gather_inputs(x, s, t, **kw)


def test_weights_are_the_same_in_place_and_out_of_place():
    """The in-place weights (faster path) are the reference's bit for bit; the anchors' change is
    ``change^T X`` (an einsum as the oracle), zero at padding slots."""
    x, s, t, _ = make_video(3, seed=6)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=60, global_ratio=0.5, window=9)
    mask[1] = False
    mask[1, :7] = True  # a frame with fewer anchors: padding slots
    fast = weights_for(x, mask)
    with vz.reference_kernels():
        ref = weights_for(x, mask)
    assert not bool(fast.valid.all())
    assert torch.equal(fast.change, ref.change) and torch.equal(fast.index, ref.index)
    delta = fast.anchor_delta(x)
    torch.testing.assert_close(delta, torch.einsum("fnk,fnd->fkd", fast.change, x), rtol=1e-5, atol=1e-5)
    assert bool((delta[~fast.valid] == 0).all())


@pytest.mark.parametrize("mode", ["bilinear", "average", "none", "max"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("marked", [True, False])
def test_pooled_rows_alone_equal_the_rows_of_the_pooled_video(mode, grad, marked):
    """``apply_intra_pool(rows=...)`` forms only the kept pooled tokens; they are the same rows of the
    whole pooled result, bit for bit, under autograd too. With weights marked as read at those rows
    (``marked``, what ``compress_video`` passes) the rows are ``kept_cells``' product (the faster path),
    and the whole result carries the same values at the real kept cells."""
    x, s, t, _ = make_video(5, seed=8)
    mode_ = vz.PoolMode(mode)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=90, global_ratio=0.5, window=9)
    mask[3] = True  # a frame of anchors only: the merge leaves it as it is
    weights = weights_for(x, mask)
    kept = pool_mask(mask, GRID, mode_, 2)
    rows, valid, counts = front_indices(kept)
    if marked:
        weights = weights.reading(rows, counts)
        assert weights.moved.tolist() == [True, True, True, False, True]
    xs = x.clone().requires_grad_(grad)
    full = intra.apply_intra_pool(xs, weights, GRID, mode_, 2)
    alone = intra.apply_intra_pool(xs, weights, GRID, mode_, 2, rows=rows)
    assert alone.shape == (5, rows.shape[1], D) and alone.requires_grad is grad
    assert torch.equal(alone.detach()[valid], full.detach()[kept])
    with vz.reference_kernels():
        reference = intra.apply_intra_pool(x, weights, GRID, mode_, 2)
    assert rel_err(full.detach(), reference) < TOL
    if marked and mode != "max":  # padding rows of the moved frames are 0; the still frame is the model's pooling
        pad = ~valid & weights.moved[:, None]
        assert bool((alone.detach()[pad] == 0).all())
        still = vz.pool_frames(x[3:4], torch.ones(1, N, dtype=torch.bool), grid=GRID, mode=mode, stride=2)[0]
        assert torch.equal(alone.detach()[3][valid[3]], still[0][kept[3]])
    else:
        assert torch.equal(alone.detach(), gather_rows(full.detach().contiguous(), rows))
        assert torch.equal(full.detach(), reference)  # no faster path here: the reference itself
    assert torch.equal(xs.detach(), x)  # the features are never written to ('none' pools to x itself)


@pytest.mark.parametrize("mode", ["bilinear", "average", "none"])
def test_kept_cells_are_the_models_pooling_of_the_merged_frames(mode):
    """``kept_cells`` against an oracle that shares none of its arithmetic: the merged frames built
    explicitly (``merge_intra_frame``), pooled by LLaVA-NeXT's own call (``F.interpolate`` /
    ``avg_pool2d`` on contiguous NCHW frames), read at the kept cells (within 1e-5 relative)."""
    import torch.nn.functional as Fn

    from visionzip.layout import pooled_grid

    mode_ = vz.PoolMode(mode)
    x, s, t, _ = make_video(3, seed=14)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=126, global_ratio=0.5, window=9)
    weights = weights_for(x, mask)
    kept = pool_mask(mask, GRID, mode_, 2)
    rows, valid, counts = front_indices(kept)
    got = intra.kept_cells(x, weights.reading(rows, counts), GRID, mode_, 2)
    cfg = vz.AOTConfig()
    merged = vz.merge_intra_frame(x, mask, grid=GRID, scale=1.0, sinkhorn_stop=cfg.sinkhorn_stop)  # (F, N, D)
    ph, pw = pooled_grid(GRID, mode=mode_, stride=2)
    nchw = merged.view(3, *GRID, D).permute(0, 3, 1, 2).contiguous()
    if mode_ is vz.PoolMode.BILINEAR:
        pooled = Fn.interpolate(nchw, size=(ph, pw), mode="bilinear", align_corners=False)
    elif mode_ is vz.PoolMode.AVERAGE:
        pooled = Fn.avg_pool2d(nchw, 2)
    else:
        pooled = nchw
    expect = pooled.flatten(2).transpose(1, 2)[kept]  # (kept cells, D)
    assert rel_err(got[valid], expect) <= TOL
    assert bool((got[~valid] == 0).all())

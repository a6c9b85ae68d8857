"""The intra stage's chunked products and in-place map, and the other copy-free paths of AOT.

On a CPU ``visionzip.intra`` runs its two products over chunks of frames (``CPU_CHUNK_BYTES`` of
features each) and, without autograd, works in place on one (F, N, k) map. These tests force many
uneven chunks at small widths (where the default budget would hold every frame in one chunk) and
compare against one chunk, against the autograd (out-of-place) path, and, for the newline selection,
against the sequence built explicitly.
"""

from __future__ import annotations

import pytest
import torch

import visionzip as vz
import visionzip.intra as intra
from visionzip.layout import kept_with_newlines, newline_mask, newline_values

GRID = (27, 27)
N = 729
D = 24


def make_video(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, N, D, generator=g)
    shallow = torch.rand(frames, N, generator=g) + 0.01
    deep = torch.rand(frames, N, generator=g) + 0.01
    return x, shallow, deep, torch.randn(D, generator=g)


SETTINGS = {
    "bilinear_inter": vz.AOTConfig(num_anchors=126, num_clips=2, pool_mode="bilinear", newline_position="one_token"),
    "average_grid": vz.AOTConfig(num_anchors=180, inter_frame=False, pool_mode="average", newline_position="grid"),
    "average_frame": vz.AOTConfig(num_anchors=90, inter_frame=False, pool_mode="average", newline_position="frame"),
    "none_budget": vz.AOTConfig(num_anchors=None, token_budget=0.2, window=None, pool_mode="none",
                                newline_position="no_token"),
    "max": vz.AOTConfig(num_anchors=108, num_clips=2, pool_mode="max", newline_position="one_token"),
}


def test_frame_chunks_cover_the_frames_within_the_budget(monkeypatch):
    x = torch.zeros(7, N, D)
    per_frame = N * D * 4
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 2 * per_frame + 1)
    chunks = intra.frame_chunks(x)
    assert [(s.start, s.stop) for s in chunks] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 1)  # smaller than a frame: still one frame per chunk
    assert len(intra.frame_chunks(x)) == 7
    # off the CPU (the caching allocator reuses memory): one chunk of every frame
    assert intra.frame_chunks(torch.zeros(7, N, D, device="meta")) == [slice(0, 7)]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_chunked_equals_one_chunk(name, monkeypatch):
    x, s, t, nl = make_video(5, seed=3)
    cfg = SETTINGS[name]
    one = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 2 * N * D * 4)  # chunks of 2, 2 and 1 frames
    assert len(intra.frame_chunks(x)) == 3
    chunked = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert torch.equal(chunked.anchor_mask, one.anchor_mask)
    assert torch.equal(chunked.kept_mask, one.kept_mask)
    torch.testing.assert_close(chunked.tokens, one.tokens, rtol=1e-6, atol=1e-6)
    # the plan replays the chunked reduction exactly
    assert torch.equal(chunked.plan.apply(x, nl), chunked.tokens)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_autograd_path_equals_in_place_path(name):
    x, s, t, nl = make_video(3, seed=4)
    cfg = SETTINGS[name]
    plain = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    xg = x.clone().requires_grad_(True)
    graded = vz.compress_video(xg, s, t, config=cfg, grid=GRID, image_newline=nl)
    # bit for bit: a model's forward (grad enabled) must splice what compress_video gives under no_grad
    assert torch.equal(graded.tokens.detach(), plain.tokens)
    graded.tokens.square().sum().backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all()) and bool(xg.grad.abs().sum() > 0)
    assert torch.equal(x, xg.detach())  # no path wrote into the features


def test_in_place_path_leaves_the_features_untouched():
    x, s, t, nl = make_video(4, seed=5)
    before = x.clone()
    for cfg in SETTINGS.values():
        vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert torch.equal(x, before)


@pytest.mark.parametrize("position", [vz.NewlinePosition.GRID, vz.NewlinePosition.FRAME])
@pytest.mark.parametrize("seed", [0, 1])
def test_kept_with_newlines_equals_the_built_sequence(position, seed):
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(4, 13 * 13, D, generator=g)
    newline = torch.randn(D, generator=g)
    mask = torch.rand(4, 13 * 13, generator=g) < 0.3
    mask[2] = False  # a frame that keeps nothing keeps its newlines
    expect = newline_values(pooled, newline, (13, 13), position)[newline_mask(mask, (13, 13), position)]
    assert torch.equal(kept_with_newlines(pooled, newline, (13, 13), position, mask), expect)


def test_input_check_norms_are_the_features_norms():
    from visionzip.inputs import gather_inputs

    x, s, t, _ = make_video(2)
    videos, _ = gather_inputs(
        x, s, t, config=vz.AOTConfig(), method="aot", score_roles=("shallow", "deep"), grid=GRID,
        image_newline=None, layout=None, question=None,
    )
    assert torch.equal(videos[0].norms, torch.linalg.vector_norm(x, dim=-1))
    x[1, 5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"features contains 1 NaN or inf value\(s\)"):
        gather_inputs(
            x, s, t, config=vz.AOTConfig(), method="aot", score_roles=("shallow", "deep"), grid=GRID,
            image_newline=None, layout=None, question=None,
        )


@pytest.mark.parametrize("grad", [False, True])
def test_anchor_delta_frame_by_frame_equals_the_batched_product(grad):
    """On a CPU the anchors' change runs frame by frame (``mm``); it is the batched ``change^T X``
    (``torch.bmm``, and an einsum as a second oracle), zero at padding slots."""
    x, s, t, _ = make_video(3, seed=6)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=60, global_ratio=0.5, window=9)
    mask[1] = False
    mask[1, :7] = True  # a frame with fewer anchors: padding slots
    cfg = vz.AOTConfig()
    weights = intra.intra_weights(
        x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    assert weights is not None and not bool(weights.valid.all())
    xs = x.clone().requires_grad_(grad)
    delta = weights.anchor_delta(xs, slice(0, 3))
    assert delta.requires_grad is grad and delta.shape == (3, weights.index.shape[1], D)
    batched = torch.bmm(weights.change.transpose(1, 2), x)
    torch.testing.assert_close(delta.detach(), batched, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(delta.detach(), torch.einsum("fnk,fnd->fkd", weights.change, x), rtol=1e-5, atol=1e-5)
    assert bool((delta.detach()[~weights.valid] == 0).all())
    # the autograd path is the same kernel: bit for bit
    with torch.no_grad():
        assert torch.equal(weights.anchor_delta(x, slice(0, 3)), delta.detach())


def test_anchor_dots_over_uneven_chunks_are_the_dot_products(monkeypatch):
    x, *_ = make_video(5, seed=7)
    index = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(f))[:40].sort().values for f in range(5)])
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 2 * N * D * 4)  # chunks of 2, 2 and 1 frames
    dots = intra.anchor_dots(x, index)
    expect = torch.einsum("fnd,fkd->fnk", x, x[torch.arange(5)[:, None], index])
    torch.testing.assert_close(dots, expect, rtol=1e-5, atol=1e-5)
    assert torch.equal(intra.anchor_dots(x, index, inplace=False), dots)



@pytest.mark.parametrize("mode", ["bilinear", "average", "none", "max"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("marked", [True, False])
def test_pooled_rows_alone_equal_the_rows_of_the_pooled_video(mode, grad, marked, monkeypatch):
    """``apply_intra_pool(rows=...)`` forms only the kept pooled tokens; they are the same rows of the
    whole pooled result, bit for bit, over uneven chunks and under autograd. With weights marked as
    read at those rows (``marked``, what ``compress_video`` passes) the rows are ``kept_cells``'
    product, and the whole result carries the same values at the real kept cells."""
    from visionzip.layout import pool_mask
    from visionzip.ops import front_indices, gather_rows

    if marked and mode == "max":
        pytest.skip("max pooling is not linear: its weights are never marked")
    calls = []
    real = intra.kept_cells
    monkeypatch.setattr(intra, "kept_cells", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, s, t, _ = make_video(5, seed=8)
    mode_ = vz.PoolMode(mode)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=90, global_ratio=0.5, window=9)
    mask[3] = True  # a frame of anchors only: the merge leaves it as it is
    cfg = vz.AOTConfig()
    weights = intra.intra_weights(
        x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 2 * N * D * 4)  # chunks of 2, 2 and 1 frames
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
    if marked:  # padding rows of the moved frames are 0; the still frame is pooled as the model pools it
        pad = ~valid & weights.moved[:, None]
        assert bool((alone.detach()[pad] == 0).all())
        still = vz.pool_frames(x[3:4], torch.ones(1, N, dtype=torch.bool), grid=GRID, mode=mode, stride=2)[0]
        assert torch.equal(alone.detach()[3][valid[3]], still[0][kept[3]])
        assert len(calls) == 2  # once for the rows alone, once for the whole result
    else:
        assert torch.equal(alone.detach(), gather_rows(full.detach().contiguous(), rows))
        assert not calls
    assert torch.equal(xs.detach(), x)  # the features are never written to ('none' pools to x itself)


@pytest.mark.parametrize("mode", ["bilinear", "average", "none"])
def test_kept_cells_are_the_models_pooling_of_the_merged_frames(mode):
    """``kept_cells`` against an oracle that shares none of its arithmetic: the merged frames built
    explicitly (``merge_intra_frame``), pooled by LLaVA-NeXT's own call (``F.interpolate`` /
    ``avg_pool2d`` on contiguous NCHW frames), read at the kept cells (within 1e-5 relative)."""
    import torch.nn.functional as Fn

    from visionzip.layout import pool_mask, pooled_grid
    from visionzip.ops import front_indices

    mode_ = vz.PoolMode(mode)
    x, s, t, _ = make_video(3, seed=14)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=126, global_ratio=0.5, window=9)
    cfg = vz.AOTConfig()
    kw = dict(
        grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    weights = intra.intra_weights(x, mask, **kw)
    kept = pool_mask(mask, GRID, mode_, 2)
    rows, valid, counts = front_indices(kept)
    got = intra.kept_cells(x, weights.reading(rows, counts), GRID, mode_, 2)
    merged = vz.merge_intra_frame(x, mask, **kw)  # (F, N, D)
    ph, pw = pooled_grid(GRID, mode=mode_, stride=2)
    nchw = merged.view(3, *GRID, D).permute(0, 3, 1, 2).contiguous()
    if mode_ is vz.PoolMode.BILINEAR:
        pooled = Fn.interpolate(nchw, size=(ph, pw), mode="bilinear", align_corners=False)
    elif mode_ is vz.PoolMode.AVERAGE:
        pooled = Fn.avg_pool2d(nchw, 2)
    else:
        pooled = nchw
    expect = pooled.flatten(2).transpose(1, 2)[kept]  # (kept cells, D)
    assert torch.linalg.vector_norm(got[valid] - expect) <= 1e-5 * torch.linalg.vector_norm(expect)
    assert bool((got[~valid] == 0).all())


@pytest.mark.parametrize("position", [vz.NewlinePosition.GRID, vz.NewlinePosition.FRAME])
def test_kept_with_newlines_from_the_kept_rows_alone(position):
    from visionzip.ops import front_indices, gather_rows

    g = torch.Generator().manual_seed(2)
    pooled = torch.randn(4, 13 * 13, D, generator=g)
    newline = torch.randn(D, generator=g)
    mask = torch.rand(4, 13 * 13, generator=g) < 0.3
    mask[2] = False  # a frame that keeps nothing keeps its newlines
    rows = gather_rows(pooled, front_indices(mask)[0])
    expect = kept_with_newlines(pooled, newline, (13, 13), position, mask)
    assert torch.equal(kept_with_newlines(rows, newline, (13, 13), position, mask, compact=True), expect)
    none = torch.zeros_like(mask)  # no frame keeps a token: the newlines alone
    empty = gather_rows(pooled, front_indices(none)[0])
    assert empty.shape[1] == 0
    assert torch.equal(
        kept_with_newlines(empty, newline, (13, 13), position, none, compact=True),
        kept_with_newlines(pooled, newline, (13, 13), position, none),
    )



@pytest.mark.parametrize("name", ["bilinear_inter", "average_grid", "average_frame", "none_budget"])
def test_compress_video_forms_the_kept_cells_alone(name, monkeypatch):
    """``compress_video`` marks the merge as read at the kept cells and forms them by ``kept_cells``
    alone; the tokens are those of the unmarked path (within 1e-5: the same sums, in another order),
    the masks identical, and the plan's replay still gives the tokens bit for bit."""
    import visionzip.aot as aot

    x, s, t, nl = make_video(4, seed=13)
    cfg = SETTINGS[name]
    calls = []
    real = intra.kept_cells
    monkeypatch.setattr(intra, "kept_cells", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert len(calls) == 1
    assert torch.equal(got.plan.apply(x, nl), got.tokens)
    monkeypatch.setattr(aot, "_reading", lambda weights, *rest: weights)
    plain = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert len(calls) == 2  # the replay above; none for the unmarked run
    assert torch.equal(got.kept_mask, plain.kept_mask) and torch.equal(got.pooled_mask, plain.pooled_mask)
    torch.testing.assert_close(got.tokens, plain.tokens, rtol=1e-5, atol=1e-5)

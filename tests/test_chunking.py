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


@pytest.mark.parametrize("mode", ["bilinear", "average"])
@pytest.mark.parametrize("grid", [(27, 27), (24, 24), (13, 9), (9, 13), (3, 2)])
@pytest.mark.parametrize("width", [8, 20, 48])
def test_cells_pooled_alone_are_the_models_pooling(mode, grid, width):
    """``pool_cells`` at a random subset of cells against LLaVA-NeXT's own call (``F.interpolate`` /
    ``avg_pool2d`` on contiguous NCHW frames): bit for bit wherever ``cell_pooling_exact`` says so,
    within 1e-6 everywhere. On an AVX512 build every width that is a multiple of 8 is exact."""
    import torch.nn.functional as Fn

    from visionzip.layout import cell_pooling_exact, pool_cells, pooled_grid

    mode_ = vz.PoolMode(mode)
    h, w = grid
    ph, pw = pooled_grid(grid, mode=mode_, stride=2)
    g = torch.Generator().manual_seed(h * 31 + w)
    x = torch.randn(3, h * w, width, generator=g) * 3
    nchw = x.view(3, h, w, width).permute(0, 3, 1, 2).contiguous()
    if mode_ is vz.PoolMode.BILINEAR:
        ref = Fn.interpolate(nchw, size=(ph, pw), mode="bilinear", align_corners=False)
    else:
        ref = Fn.avg_pool2d(nchw, 2)
    ref = ref.flatten(2).transpose(1, 2)  # (F, n, D)
    cells = torch.stack([torch.randperm(ph * pw, generator=g)[: max(ph * pw // 3, 1)] for _ in range(3)])
    got = pool_cells(x, grid, mode_, 2, cells)
    expect = torch.stack([ref[f, cells[f]] for f in range(3)])
    assert got.shape == expect.shape
    assert torch.allclose(got, expect, rtol=1e-6, atol=1e-6)
    exact = cell_pooling_exact(grid, mode_, 2, width, torch.float32, torch.device("cpu"))
    if exact:
        assert torch.equal(got, expect)
    if torch.backends.cpu.get_cpu_capability() == "AVX512" and width % 8 == 0:
        assert exact


def test_cell_pooling_is_never_claimed_exact_where_it_is_not_checked():
    from visionzip.layout import cell_pooling_exact

    cpu = torch.device("cpu")
    assert not cell_pooling_exact(GRID, vz.PoolMode.MAX, 2, 64, torch.float32, cpu)  # not linear
    assert not cell_pooling_exact(GRID, vz.PoolMode.NONE, 2, 64, torch.float32, cpu)
    assert not cell_pooling_exact(GRID, vz.PoolMode.BILINEAR, 3, 64, torch.float32, cpu)  # stride 2 only
    assert not cell_pooling_exact(GRID, vz.PoolMode.BILINEAR, 2, 64, torch.float32, torch.device("meta"))


@pytest.mark.parametrize("mode", ["bilinear", "average", "none", "max"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("cells_alone", [True, False])
@pytest.mark.parametrize("focus", [True, False])
def test_pooled_rows_alone_equal_the_rows_of_the_pooled_video(mode, grad, cells_alone, focus, monkeypatch):
    """``apply_intra_pool(rows=...)`` forms only the kept pooled tokens, chunk by chunk; they are the
    same rows of the whole pooled result, bit for bit, over uneven chunks and under autograd, with the
    kept cells pooled alone and (``cells_alone=False``, a build where that is not exact) with whole
    frames pooled; with weights focused on the anchors feeding those cells (``focus``, what
    ``compress_video`` passes), only those anchors' changes are formed for the cells alone."""
    from visionzip.layout import pool_mask
    from visionzip.ops import front_indices, gather_rows

    if focus and mode == "max":
        pytest.skip("max pooling is not linear: weights are never focused for it")
    calls, focused_calls = [], []
    if cells_alone:
        real = intra._kept_cells_corrected
        monkeypatch.setattr(intra, "_kept_cells_corrected", lambda *a, **k: calls.append(1) or real(*a, **k))
        real_focus = intra.IntraWeights.focus_delta
        monkeypatch.setattr(
            intra.IntraWeights, "focus_delta", lambda *a, **k: focused_calls.append(1) or real_focus(*a, **k)
        )
    else:
        monkeypatch.setattr(intra, "cell_pooling_exact", lambda *a: False)

    x, s, t, _ = make_video(5, seed=8)
    mode_ = vz.PoolMode(mode)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=90, global_ratio=0.5, window=9)
    cfg = vz.AOTConfig()
    weights = intra.intra_weights(
        x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    monkeypatch.setattr(intra, "CPU_CHUNK_BYTES", 2 * N * D * 4)  # chunks of 2, 2 and 1 frames
    kept = pool_mask(mask, GRID, mode_, 2)
    rows, valid, _ = front_indices(kept)
    if focus:
        weights = weights.focused(rows, GRID, mode_, 2)
        if mode == "none":  # every anchor is a kept cell of its own
            assert torch.equal(weights.focus, weights.valid)
        else:
            assert 0 < int(weights.focus.sum()) < int(weights.valid.sum())
    xs = x.clone().requires_grad_(grad)
    full = intra.apply_intra_pool(xs, weights, GRID, mode_, 2)
    alone = intra.apply_intra_pool(xs, weights, GRID, mode_, 2, rows=rows)
    assert alone.shape == (5, rows.shape[1], D) and alone.requires_grad is grad
    assert torch.equal(alone.detach(), gather_rows(full.detach().contiguous(), rows))
    assert torch.equal(alone.detach()[valid], full.detach()[kept])
    assert torch.equal(xs.detach(), x)  # the features are never written to ('none' pools to x itself)
    # the cells alone are pooled wherever that is exact (this build: D = 24 is) and no gradient is taken
    if cells_alone and not grad and mode in ("bilinear", "average"):
        assert len(calls) == 3 or not intra.cell_pooling_exact(GRID, mode_, 2, D, torch.float32, x.device)
        assert len(focused_calls) == (len(calls) if focus else 0)


@pytest.mark.parametrize("mode", ["bilinear", "average", "none"])
def test_feeding_anchors_are_those_the_models_pooling_carries_to_a_kept_cell(mode):
    """``feeding_anchors`` against the model's own pooling: an anchor feeds a kept cell exactly when
    a frame that is 1 at the anchor and 0 elsewhere, pooled by LLaVA-NeXT's call (``F.interpolate`` /
    ``avg_pool2d``), is nonzero at one of the kept cells."""
    import torch.nn.functional as Fn

    from visionzip.layout import pool_mask, pooled_grid
    from visionzip.ops import front_indices

    mode_ = vz.PoolMode(mode)
    _, s, t, _ = make_video(3, seed=11)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=90, global_ratio=0.5, window=9)
    mask[2] = False
    mask[2, 700:] = True  # the dropped last row of 'average' pooling feeds no cell
    index, valid, _ = front_indices(mask)
    rows = front_indices(pool_mask(mask, GRID, mode_, 2))[0]
    got = intra.feeding_anchors(index, valid, rows, GRID, mode_, 2)
    ph, pw = pooled_grid(GRID, mode=mode_, stride=2)
    expect = torch.zeros_like(got)
    for f in range(3):
        for j in range(index.shape[1]):
            if not valid[f, j]:
                continue
            one = torch.zeros(1, 1, N)
            one[0, 0, index[f, j]] = 1.0
            one = one.view(1, 1, *GRID)
            if mode_ is vz.PoolMode.BILINEAR:
                cells = Fn.interpolate(one, size=(ph, pw), mode="bilinear", align_corners=False)
            elif mode_ is vz.PoolMode.AVERAGE:
                cells = Fn.avg_pool2d(one, 2)
            else:
                cells = one
            expect[f, j] = bool((cells.reshape(-1)[rows[f]] != 0).any())
    assert torch.equal(got, expect)
    assert 0 < int(got.sum()) < int(valid.sum()) or mode == "none"


@pytest.mark.parametrize("grad", [False, True])
def test_focused_anchor_delta_is_the_anchor_delta(grad):
    """Focused weights split the anchors' change into the focused anchors' product and the others';
    together they are the whole product (``torch.bmm``, within 1e-6), the focused rows alone
    (``focus_delta``) are those rows bit for bit, and padding slots stay exactly zero."""
    from visionzip.layout import pool_mask
    from visionzip.ops import front_indices

    x, s, t, _ = make_video(3, seed=12)
    mask = vz.select_anchors(s, t, grid=GRID, num_anchors=60, global_ratio=0.5, window=9)
    mask[1] = False
    mask[1, :7] = True  # a frame with fewer anchors: padding slots
    cfg = vz.AOTConfig()
    weights = intra.intra_weights(
        x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight, ot_weight=cfg.ot_weight,
        scale=1.0, max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
        ot_mass=cfg.ot_mass, groups=None,
    )
    rows = front_indices(pool_mask(mask, GRID, vz.PoolMode.BILINEAR, 2))[0]
    focused = weights.focused(rows, GRID, vz.PoolMode.BILINEAR, 2)
    assert focused.frames(slice(1, 3)).focus.shape == (2, weights.index.shape[1])
    xs = x.clone().requires_grad_(grad)
    delta = focused.anchor_delta(xs, slice(0, 3))
    assert delta.requires_grad is grad and delta.shape == (3, weights.index.shape[1], D)
    torch.testing.assert_close(delta.detach(), torch.bmm(weights.change.transpose(1, 2), x), rtol=1e-6, atol=1e-6)
    assert bool((delta.detach()[~weights.valid] == 0).all())
    with torch.no_grad():
        alone = focused.focus_delta(x, slice(0, 3))
    assert torch.equal(alone, delta.detach()[focused.focus])


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
def test_compress_video_forms_only_the_read_anchors_changes(name, monkeypatch):
    """``compress_video`` focuses the merge on the anchors feeding a kept cell and forms only their
    changes; the tokens are those of the unfocused merge (within 1e-6: the same products, split in
    two), the masks identical, and the plan's replay still gives the tokens bit for bit."""
    import visionzip.aot as aot

    x, s, t, nl = make_video(4, seed=13)
    cfg = SETTINGS[name]
    focused_calls = []
    real_focus = intra.IntraWeights.focus_delta
    monkeypatch.setattr(intra.IntraWeights, "focus_delta", lambda *a, **k: focused_calls.append(1) or real_focus(*a, **k))
    got = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    # one chunk of 4 frames at D = 24; 'none' is not pooled cell by cell (the tokens are x's own rows)
    calls = 0 if name == "none_budget" else 1
    assert len(focused_calls) == calls
    assert torch.equal(got.plan.apply(x, nl), got.tokens)
    monkeypatch.setattr(aot, "_focused", lambda weights, rows, layout: weights)
    plain = vz.compress_video(x, s, t, config=cfg, grid=GRID, image_newline=nl)
    assert len(focused_calls) == calls
    assert torch.equal(got.kept_mask, plain.kept_mask) and torch.equal(got.pooled_mask, plain.pooled_mask)
    torch.testing.assert_close(got.tokens, plain.tokens, rtol=1e-6, atol=1e-6)

"""Every method is differentiable where training needs it: gradients through compress_video are finite
for every preset of every method and for ``full`` (the model is fine-tuned with AOT in the loop),
including frames with nothing to merge."""

from __future__ import annotations

import pytest
import torch

import visionzip as vz


@pytest.mark.parametrize("name", [*vz.list_presets(None), "full"])
def test_gradients_are_finite(name):
    cfg = vz.load_config(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 729, 32, generator=gen, requires_grad=True)
    shallow, deep = torch.rand(16, 729, generator=gen), torch.rand(16, 729, generator=gen)
    nl = torch.randn(32, generator=gen)
    result = vz.compress_video(x, shallow, deep, config=cfg, grid=(27, 27), image_newline=nl)
    (result.tokens * torch.randn(result.tokens.shape, generator=gen)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradients_with_every_token_an_anchor():
    """All anchors: the pruned set is empty, every OT marginal is zero, the plan is zero."""
    cfg = vz.get_preset("paper_ov_10pct").replace(num_anchors=729)
    x = torch.randn(8, 729, 16, requires_grad=True)
    result = vz.compress_video(x, torch.rand(8, 729), torch.rand(8, 729), config=cfg, grid=(27, 27))
    result.tokens.sum().backward()
    assert torch.isfinite(x.grad).all()

"""Shared fixtures: golden tensors of the authors' release, and markers that skip cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

GOLDEN_DIR = Path(__file__).parent / "golden"


def load_golden(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(case parameters, tensors) of one golden file; uint8 masks come back as bool."""
    with safe_open(GOLDEN_DIR / f"{name}.safetensors", "pt") as fh:
        case = json.loads(fh.metadata()["case"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    for key in ("anchor_mask", "pooled_mask", "keep_mask"):
        if key in tensors:
            tensors[key] = tensors[key].bool()
    return case, tensors


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_ckpt = pytest.mark.skip(reason="set AOT_TEST_CHECKPOINT to a real LLaVA checkpoint folder")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "checkpoint" in item.keywords and not os.environ.get("AOT_TEST_CHECKPOINT"):
            item.add_marker(skip_ckpt)

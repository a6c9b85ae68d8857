"""Attention each token receives in chosen blocks of transformers' Qwen2.5-VL and Qwen3-VL vision towers,
folded onto the merged tokens the LLM sees (docs/algorithm.md §0 for the score itself).

The tower runs unchanged (its own blocks, its own attention backend), so its features are exactly
those of ``model.visual(...)``. For each requested block a forward pre-hook on its attention reads the
block's normalised input, ``cu_seqlens`` (Qwen2.5-VL: windows in most blocks, whole temporal patches in
the ``fullatt_block_indexes`` ones; Qwen3-VL: whole temporal patches in every block) and rotary
embeddings, and computes on the side, in query chunks, the softmax over each attention segment and its
column sums: ``s_j = mean_h sum_i A[h, i, j]`` within ``j``'s segment. No full (heads, N, N) map is
held. Patch scores are then summed over each merged token's ``spatial_merge_size**2`` patches and, for
a windowed tower (Qwen2.5-VL), put back from the tower's window order into the merged tokens' raster
order (time, row, column), the order of the video placeholders.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["default_score_layers", "segment_received", "video_features_with_scores", "vision_output_with_scores"]


def default_score_layers(vision_config: Any) -> tuple[int, int]:
    """The (shallow, deep) blocks AOT reads by default, the analogue of SigLIP's layers 5 and -2 on LLaVA.

    Qwen2.5-VL (``fullatt_block_indexes``): the first and the last full-attention block, the shallowest
    and the deepest blocks whose attention spans a whole temporal patch (the others attend inside
    windows). Qwen3-VL (every block global, ``deepstack_visual_indexes``): the first deepstack block, the
    shallowest whose output the LLM reads itself, and the last block, the one the main merger reads.
    Otherwise the first and the last block."""
    depth = int(vision_config.depth)
    full = sorted(int(i) for i in getattr(vision_config, "fullatt_block_indexes", ()) or ())
    if full:
        return full[0], full[-1]
    deepstack = sorted(int(i) for i in getattr(vision_config, "deepstack_visual_indexes", ()) or ())
    if deepstack:
        return deepstack[0], depth - 1
    return 0, depth - 1


def _resolve(layers: Sequence[int], depth: int) -> list[int]:
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -depth <= layer < depth:
            raise ValueError(f"score layer {layer!r} is not valid; expected a block index in [{-depth}, {depth - 1}]")
        out.append(layer % depth)
    return out


def segment_received(q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, scaling: float,
                     chunk: int = 256) -> torch.Tensor:
    """(S,) float32: attention each position receives inside its ``cu_seqlens`` segment, averaged over
    heads, from rotated queries and keys (h, S, d), in query chunks (no (h, S, S) map is held)."""
    heads, seq, _ = q.shape
    received = torch.zeros(heads, seq, dtype=torch.float32, device=q.device)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        keys_t = k[:, a:b].transpose(1, 2)  # (h, d, L)
        for start in range(a, b, chunk):
            stop = min(start + chunk, b)
            logits = torch.matmul(q[:, start:stop], keys_t) * scaling  # (h, c, L)
            received[:, a:b] += torch.softmax(logits, dim=-1, dtype=torch.float32).sum(dim=1)
    return received.mean(0)


def _received(attn: torch.nn.Module, hidden: torch.Tensor, cu_seqlens: torch.Tensor,
              position_embeddings: tuple[torch.Tensor, torch.Tensor], chunk: int) -> torch.Tensor:
    """(S,) float32: attention each patch receives inside its segment, averaged over heads."""
    # the rotary helper of the attention's own modeling module (Qwen2.5-VL's or Qwen3-VL's)
    apply_rotary_pos_emb_vision = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision

    seq = hidden.shape[0]
    q, k, _ = attn.qkv(hidden).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    return segment_received(q.transpose(0, 1), k.transpose(0, 1), cu_seqlens, attn.scaling, chunk)


def video_features_with_scores(
    visual: torch.nn.Module, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor, layers: Sequence[int],
    *, chunk: int = 256,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Run the vision tower on ``pixel_values_videos`` (the processor's, all videos concatenated) and
    capture scores in ``layers``.

    Returns ``(features, scores)``: features (M, D) exactly as ``visual(...).pooler_output`` (M merged
    tokens of every video, raster order), and one float32 (M,) tensor per layer: the attention the
    patches of each merged token receive in that block, summed over its patches. The tower's whole
    output (with Qwen3-VL's ``deepstack_features``) is :func:`vision_output_with_scores`'s.
    """
    out, scores = vision_output_with_scores(visual, pixel_values_videos, grid_thw, layers, chunk=chunk)
    return out.pooler_output, scores


def vision_output_with_scores(
    visual: torch.nn.Module, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor, layers: Sequence[int],
    *, chunk: int = 256,
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """:func:`video_features_with_scores` returning the tower's own output object (``pooler_output``,
    and ``deepstack_features`` on Qwen3-VL) in place of the features."""

    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} is not valid; expected a positive integer")
    blocks = visual.blocks
    wanted = _resolve(list(layers), len(blocks))
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(index: int):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            with torch.no_grad():
                captured[index] = _received(module, hidden, kwargs["cu_seqlens"], kwargs["position_embeddings"], chunk)

        return hook

    for index in sorted(set(wanted)):
        handles.append(blocks[index].attn.register_forward_pre_hook(hook_for(index), with_kwargs=True))
    try:
        out = visual(pixel_values_videos.type(visual.dtype), grid_thw=grid_thw)
    finally:
        for handle in handles:
            handle.remove()
    merge = visual.spatial_merge_size
    scores = tuple(captured[i].view(-1, merge * merge).sum(-1) for i in wanted)
    if getattr(visual, "window_size", None) is not None:  # Qwen2.5-VL: back from the tower's window order
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=merge, window_size=visual.window_size, patch_size=visual.patch_size, kwargs={},
        )
        restore = torch.argsort(window_index.to(out.pooler_output.device))
        scores = tuple(s[restore] for s in scores)
    return out, scores

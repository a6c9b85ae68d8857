"""AOT-capable subclasses of vLLM's own Qwen2.5-VL model and multimodal processor.

Switched on per model by ``hf_overrides={"aot": "<spec>"}`` (read from the model's config in every
vLLM process); without the key, or with ``none``, every method defers to vLLM's own, token for token.

How a compressed video goes through vLLM:

1. **Prompt** (:class:`AOTQwen2_5_VLProcessor`): vLLM's own prompt update, with the video's
   placeholder count replaced by the plan's count for the video's grid (:mod:`llava.serving.plan`).
2. **Positions** (``get_mrope_input_positions``): text keeps the offsets of the uncompressed prompt (the
   text after a video continues from the uncompressed video's last position + 1, as this project's
   transformers path places it); every placeholder of a video holds the video's start offset.
3. **Features** (``_process_video_input``, then vLLM's pruning hook ``_postprocess_video_embeds_evs``,
   which vLLM's ``embed_multimodal`` calls while ``is_multimodal_pruning_enabled``): vLLM's vision tower
   runs unchanged; forward pre-hooks on the attention of the score blocks read its rotated queries and
   keys and add up, in query chunks, the attention each patch receives in its segment (no attention
   map is materialised by the tower); the reduction keeps or merges tokens and appends each kept
   token's (t, row, col) inside the video (its anchor's cell for a merged token) as extra channels.
4. **Merge** (``embed_input_ids`` and ``forward``): the channels are taken off before vLLM's
   ``_merge_multimodal_embeddings`` and added to the placeholders' start offsets in ``forward``. vLLM's
   own route for this, ``recompute_mrope_positions``, runs only when ``--video-pruning-rate`` is set, and
   the CPU model runner never enables it: with vLLM's EVS on the CPU backend the appended channels reach
   the merge (``value tensor of shape [9, 132] cannot be broadcast to ... [9, 128]``). Carrying the
   positions inside the plugin avoids that without changing vLLM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from llava.model.qwen_vl.scores import default_score_layers, segment_received
from llava.serving.plan import PLUGIN_KEY, decode_positions, encode_positions, serving_plan

__all__ = ["AOTQwen2_5_VLForConditionalGeneration", "AOTQwen2_5_VLProcessor"]

logger = logging.getLogger(__name__)


def _plan_of(hf_config: Any):
    return serving_plan(getattr(hf_config, PLUGIN_KEY, None))


class AOTQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    """vLLM's processor, with each video's placeholder count set to the plan's."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_config = self.info.get_hf_config()
        plan = _plan_of(hf_config)
        if plan is None:
            return updates
        merge = int(hf_config.vision_config.spatial_merge_size)
        temporal = int(hf_config.vision_config.temporal_patch_size)
        vocab = self.info.get_tokenizer().get_vocab()
        video_token = vocab[self.info.get_hf_processor(**hf_processor_mm_kwargs).video_token]

        def video_replacement(item_idx: int) -> list[int]:
            t, h, w = map(int, out_mm_kwargs["video"][item_idx]["video_grid_thw"].data)
            return [video_token] * plan.token_count(t, h // merge, w // merge, temporal)

        return [u if u.modality != "video" else PromptReplacement(modality="video", target=u.target,
                                                                   replacement=video_replacement)
                for u in updates]


@MULTIMODAL_REGISTRY.register_processor(
    AOTQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class AOTQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL, with the videos reduced by the plan ``hf_overrides={"aot": spec}`` names."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.aot_plan = _plan_of(self.config)
        self._aot_scores: list[dict[str, torch.Tensor]] = []
        self._aot_pending: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.aot_plan is None:
            return
        if self.is_multimodal_pruning_enabled:
            raise ValueError(
                f"hf_overrides {{{PLUGIN_KEY!r}: {self.aot_plan.spec!r}}} and --video-pruning-rate were both given; "
                "expected one video reduction (vLLM's masks run through the plugin as evs@<r> / vidcom2@<r>)"
            )
        if self.use_data_parallel:
            raise ValueError("hf_overrides 'aot' does not support --mm-encoder-tp-mode data; expected the default")

        shallow, deep = default_score_layers(self.config.vision_config)
        self.aot_score_layers = {"shallow": shallow, "deep": deep}
        # vLLM's embed_multimodal calls the pruning hook below while this is set (and, for the same
        # reason, keeps the vision tower out of encoder CUDA graphs)
        self.is_multimodal_pruning_enabled = True

    # -------------------------------------------------------------- prompt positions
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list) -> tuple[torch.Tensor, int]:
        if self.aot_plan is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        lengths = {f.mm_position.offset: int(f.mm_position.length) for f in mm_features}
        pieces: list[np.ndarray] = []
        st, st_idx = 0, 0
        for offset, t, h, w, t_factor in self.iter_mm_grid_thw(mm_features):
            text = offset - st
            pieces.append(np.broadcast_to(np.arange(text), (3, text)) + st_idx)
            start = st_idx + text
            pieces.append(np.full((3, lengths[offset]), start))  # the media's start; each token adds its cell
            st_idx = start + max(int((t - 1) * t_factor), h - 1, w - 1) + 1
            st = offset + lengths[offset]
        if st < len(input_tokens):
            text = len(input_tokens) - st
            pieces.append(np.broadcast_to(np.arange(text), (3, text)) + st_idx)
            st_idx += text
        positions = np.concatenate(pieces, axis=1).reshape(3, -1)
        return torch.from_numpy(positions), int(st_idx - len(input_tokens))

    # -------------------------------------------------------------- features, scores, reduction
    def _process_video_input(self, video_input) -> tuple[torch.Tensor, ...]:
        roles = () if self.aot_plan is None else self.aot_plan.score_roles
        if not roles or video_input["type"] != "pixel_values_videos":
            self._aot_scores = []
            return super()._process_video_input(video_input)
        grid = video_input["video_grid_thw"].tolist()
        captured: dict[int, torch.Tensor] = {}

        def hook_for(index: int):
            def hook(module, args, kwargs):
                with torch.no_grad():
                    # the block's rotated queries and keys, (1, S, heads, d)
                    q, k = (kwargs[n][0].transpose(0, 1).float() for n in ("query", "key"))
                    captured[index] = segment_received(q, k, kwargs["cu_seqlens"], q.shape[-1] ** -0.5)
            return hook

        layers = sorted({self.aot_score_layers[r] for r in roles})
        handles = [self.visual.blocks[i].attn.attn.register_forward_pre_hook(hook_for(i), with_kwargs=True)
                   for i in layers]
        try:
            out = super()._process_video_input(video_input)
        finally:
            for handle in handles:
                handle.remove()
        unit = self.visual.spatial_merge_size ** 2
        restore = self.visual.prepare_encoder_metadata(grid)["reverse_indices"].to(out[0].device)
        sizes = [len(o) for o in out]
        merged = {r: captured[self.aot_score_layers[r]].view(-1, unit).sum(-1)[restore] for r in roles}
        self._aot_scores = [dict(zip(roles, parts)) for parts in zip(*(merged[r].split(sizes) for r in roles))]
        return out

    def _postprocess_video_embeds_evs(self, video_embeds_split: Sequence[torch.Tensor], video_input):
        if self.aot_plan is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        merge = self.visual.spatial_merge_size
        temporal = int(self.config.vision_config.temporal_patch_size)
        tokens_per_second = float(getattr(self.config.vision_config, "tokens_per_second", 1.0))
        seconds = video_input.get("second_per_grid_ts")
        scores = self._aot_scores or [{} for _ in video_embeds_split]
        out = []
        for v, (emb, (t, h, w)) in enumerate(zip(video_embeds_split, video_input["video_grid_thw"].tolist())):
            rows, cols = h // merge, w // merge
            t_factor = (float(seconds[v]) if seconds is not None else 1.0) * tokens_per_second
            cells = _cells(t, rows, cols)
            cells[:, 0] = (cells[:, 0] * t_factor).long()  # as vLLM's and transformers' own M-RoPE place time
            tokens, positions = self.aot_plan.reduce(emb, scores[v], t, rows, cols, temporal, cells.to(emb.device))
            planned = self.aot_plan.token_count(t, rows, cols, temporal)
            if tokens.shape[0] != planned:
                # the prompt holds `planned` placeholders; raising here would stop the engine for every request
                logger.error("compression %r kept %d tokens of a %dx%dx%d video planned at %d: fitted to the plan "
                             "(its last tokens dropped, or its last token repeated)", self.aot_plan.spec,
                             tokens.shape[0], t, rows, cols, planned)
                fit = torch.arange(planned, device=tokens.device).clamp(max=tokens.shape[0] - 1)
                tokens, positions = tokens[fit], positions[fit]
            out.append(encode_positions(tokens.to(emb.dtype), positions))
        self._aot_scores = []
        return tuple(out)

    def _postprocess_image_embeds_evs(self, image_embeds_split, image_input):
        if self.aot_plan is None:
            return super()._postprocess_image_embeds_evs(image_embeds_split, image_input)
        merge = self.visual.spatial_merge_size
        out = []
        for emb, (_, h, w) in zip(image_embeds_split, image_input["image_grid_thw"].tolist()):
            rows, cols = h // merge, w // merge
            cells = _cells(1, rows, cols)
            out.append(encode_positions(emb, cells.to(emb.device)))
        return tuple(out)

    # -------------------------------------------------------------- merge and positions
    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None, **kwargs):
        if self.aot_plan is None or not multimodal_embeddings:
            return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal, **kwargs)
        stripped, positions = zip(*(decode_positions(e) for e in multimodal_embeddings))
        self._aot_pending = (is_multimodal, torch.cat(positions))
        return super().embed_input_ids(input_ids, list(stripped), is_multimodal=is_multimodal, **kwargs)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        pending, self._aot_pending = self._aot_pending, None
        if pending is not None and inputs_embeds is not None:
            mask, cell = pending
            mask = mask.to(positions.device)
            if mask.shape[0] < positions.shape[-1]:
                mask = torch.cat([mask, mask.new_zeros(positions.shape[-1] - mask.shape[0])])
            positions = positions.clone()
            positions[:, mask] += cell.T.to(positions.device, positions.dtype)
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)


def _cells(t: int, rows: int, cols: int) -> torch.Tensor:
    """(t*rows*cols, 3) long: each merged token's (t, row, col) inside its video or image, raster order."""
    return torch.stack(torch.meshgrid(torch.arange(t), torch.arange(rows), torch.arange(cols), indexing="ij"),
                       dim=-1).view(-1, 3)

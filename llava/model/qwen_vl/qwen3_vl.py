"""The compression seam for transformers' own ``Qwen3VLForConditionalGeneration`` (and the MoE class, which
shares its visual path).

Nothing of transformers is patched: :class:`Qwen3VLCompression` wraps a loaded model instance and turns
what the processor returns into a *compressed prompt* that the model's own ``forward`` and ``generate``
take as they are:

* ``input_ids``: Qwen3-VL's processor writes, per temporal patch of a video, ``<t seconds>`` followed by
  ``<|vision_start|>`` + one ``<|video_pad|>`` per merged token + ``<|vision_end|>``. After compression
  each temporal patch keeps its own timestamp block with as many placeholders as tokens remain *of that
  patch* (a token's patch is its plan position's frame; a token that absorbed others counts with its
  anchor's patch); a patch with no token left loses its whole block, timestamp included, so the
  timestamps in the prompt are those of the patches that remain.
* ``mm_encoder_outputs``: the compressed tokens as the vision tower's output (``pooler_output``, one
  tensor per video) with every deepstack level reduced by the same plan (``plan.apply``: what is merged
  in the main features is merged, with the same weights, in each level), so transformers writes them
  into the placeholders and adds each level at exactly the remaining visual positions.
* ``position_ids`` (3, B, L'): the (time, row, column) positions transformers' ``get_rope_index`` gives
  the uncompressed prompt, carried to each kept token from its cell (a token that absorbed others takes
  its anchor's); text keeps its positions, so the text after the video continues from the
  uncompressed prompt's offset, and cached decoding continues from the prompt's last position + 1.

Within a patch the tokens keep the method's order. The layout, the vision tower with its scores and the
compression are :class:`llava.model.qwen_vl.common.QwenVLCompression`'s.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import torch

from llava.model.qwen_vl.common import QwenVLCompression

__all__ = ["Qwen3VLCompression"]


class Qwen3VLCompression(QwenVLCompression):
    """A per-instance compression setting for a transformers Qwen3-VL model.

    ``seam = Qwen3VLCompression(model)``; ``seam.set_compression("aot@0.25")``;
    ``model(**seam.prepare(**processor_outputs))`` or ``seam.generate(**processor_outputs, max_new_tokens=…)``.
    """

    MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")
    FAMILY = "Qwen3VLForConditionalGeneration"

    def _blocks(self, ids: torch.Tensor, b: int) -> list[tuple[int, int, int]]:
        """Per temporal patch of the prompt's videos, in order: ``(block_start, pads_start, pads_end)``:
        the patch's timestamp text starts at ``block_start`` (just after the previous ``<|vision_end|>``
        or ``<|vision_start|>``), its placeholders span ``[pads_start, pads_end)``, its ``<|vision_end|>``
        sits at ``pads_end``."""
        cfg = self.model.config
        pad, start_id, end_id = int(cfg.video_token_id), int(cfg.vision_start_token_id), int(cfg.vision_end_token_id)
        is_pad = ids == pad
        if not bool(is_pad.any()):
            return []
        edges = torch.diff(is_pad.int(), prepend=is_pad.new_zeros(1).int(), append=is_pad.new_zeros(1).int())
        starts = torch.nonzero(edges == 1)[:, 0].tolist()
        ends = torch.nonzero(edges == -1)[:, 0].tolist()
        marks = torch.nonzero((ids == start_id) | (ids == end_id))[:, 0].tolist()
        out = []
        for a, z in zip(starts, ends):
            if a == 0 or int(ids[a - 1]) != start_id or z >= ids.shape[0] or int(ids[z]) != end_id:
                raise ValueError(
                    f"prompt {b}: the <|video_pad|> run at {a}..{z} is not enclosed in "
                    "<|vision_start|> ... <|vision_end|>; "
                    "expected the Qwen3-VL processor's prompt (one timestamped block per temporal patch)"
                )
            i = bisect_left(marks, a - 1)  # marks[i] is this block's <|vision_start|>; the one before ends the text
            out.append((marks[i - 1] + 1 if i > 0 else a - 1, a, z))
        return out

    @torch.no_grad()
    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.Tensor,
        mm_token_type_ids: torch.Tensor | None = None,
        questions: list[str | None] | None = None,
        pixel_values: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """``input_ids``, ``attention_mask``, ``position_ids`` (3, B, L') and ``mm_encoder_outputs`` of the
        compressed prompts (left-padded to a common length) for the model's ``forward`` or ``generate``;
        ``rope_deltas`` (B, 1); ``kept_blocks``: per video, which temporal patches kept a block."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        mm_token_type_ids = self.prompt_token_types(input_ids, mm_token_type_ids, pixel_values)
        model = self.model.model
        video_id = int(self.model.config.video_token_id)
        positions, _ = model.get_rope_index(input_ids, mm_token_type_ids, video_grid_thw=video_grid_thw,
                                            attention_mask=attention_mask)  # (3, B, L)
        videos = self.video_tokens(pixel_values_videos, video_grid_thw, questions)
        layouts = self.video_layouts(video_grid_thw)
        rows, row_pos, main, levels, kept_blocks = [], [], [], [[] for _ in (videos[0].levels if videos else [])], []
        video = 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids, pos = input_ids[b][keep], positions[:, b][:, keep]
            blocks = self._blocks(ids, b)
            pieces, piece_pos, cursor, k = [], [], 0, 0
            while k < len(blocks):  # the blocks of one video: its layout's frames, in order
                if video >= len(layouts):
                    raise ValueError(
                        f"prompt {b} holds more video blocks than video_grid_thw describes ({len(layouts)} videos)"
                    )
                lay, v = layouts[video], videos[video]
                mine = blocks[k:k + lay.frames]
                if len(mine) != lay.frames or any(z - a != lay.tokens_per_frame for _, a, z in mine):
                    raise ValueError(f"video {video}: expected {lay.frames} blocks of {lay.tokens_per_frame} "
                                     "<|video_pad|> "
                                     f"placeholders in prompt {b}")
                cells = torch.stack([pos[:, a:z].T for _, a, z in mine])  # (F, N, 3) per cell
                token_pos = self.token_positions(v, cells)  # (T, 3)
                frame = v.result.plan.positions[:, 0].to(ids.device)
                order = torch.argsort(frame, stable=True)  # each patch's tokens into its own block
                counts = torch.bincount(frame, minlength=lay.frames).tolist()
                main.append(v.tokens[order.to(v.tokens.device)])
                for level, values in zip(levels, v.levels):
                    level.append(values[order.to(values.device)])
                token_pos, taken = token_pos[order], 0
                kept_blocks.append([c > 0 for c in counts])
                for (s, a, z), count in zip(mine, counts):
                    pieces.append(ids[cursor:s])
                    piece_pos.append(pos[:, cursor:s])
                    if count:  # timestamp text and <|vision_start|>, the patch's tokens, <|vision_end|>
                        pieces += [ids[s:a], ids.new_full((count,), video_id), ids[z:z + 1]]
                        piece_pos += [pos[:, s:a], token_pos[taken:taken + count].T.to(pos.dtype), pos[:, z:z + 1]]
                        taken += count
                    cursor = z + 1
                k, video = k + lay.frames, video + 1
            pieces.append(ids[cursor:])
            piece_pos.append(pos[:, cursor:])
            rows.append(torch.cat(pieces))
            row_pos.append(torch.cat(piece_pos, 1))
        if video != len(layouts):
            raise ValueError(f"the prompts hold {video} videos; video_grid_thw describes {len(layouts)}")
        pad_id = self.model.config.text_config.pad_token_id
        batch = self.padded_prompts(rows, row_pos, 0 if pad_id is None else int(pad_id), attention_mask)
        encoder = BaseModelOutputWithDeepstackFeatures(pooler_output=tuple(main),
                                                       deepstack_features=[tuple(level) for level in levels])
        return {"input_ids": batch.pop("rows"), **batch, "mm_encoder_outputs": {"video": encoder},
                "kept_blocks": kept_blocks}

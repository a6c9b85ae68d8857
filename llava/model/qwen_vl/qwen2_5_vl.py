"""The compression seam for transformers' own ``Qwen2_5_VLForConditionalGeneration``.

Nothing of transformers is patched: :class:`Qwen25VLCompression` wraps a loaded model instance, holds
its compression setting, and turns what the processor returns (``input_ids`` with one
``<|video_pad|>`` per merged token, ``pixel_values_videos``, ``video_grid_thw``) into what the model's
``forward`` accepts after compression: ``inputs_embeds`` with the compressed video tokens in place of
the placeholders, and the 3-D rotary ``position_ids`` (time, row, column) that transformers'
``get_rope_index`` gives the uncompressed prompt, carried to every kept token from the cell it stands
for (a token that absorbed others takes its anchor's position). Text keeps its positions, so the
text after a video continues from the offset the uncompressed prompt has.

The layout, the vision tower with its scores, the compression and the padded batch are
:class:`llava.model.qwen_vl.common.QwenVLCompression`'s.
"""

from __future__ import annotations

from typing import Any

import torch

from llava.model.qwen_vl.common import QwenVLCompression


class Qwen25VLCompression(QwenVLCompression):
    """A per-instance compression setting for a transformers Qwen2.5-VL model.

    ``seam = Qwen25VLCompression(model)``; ``seam.set_compression("aot@0.25")``;
    ``model(**seam.prepare(**processor_outputs))``. Without a setting ``prepare`` still builds the
    inputs (the uncompressed sequence, transformers' own positions).
    """

    MODEL_TYPES = ("qwen2_5_vl",)
    FAMILY = "Qwen2_5_VLForConditionalGeneration"

    @torch.no_grad()
    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.Tensor,
        mm_token_type_ids: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        questions: list[str | None] | None = None,
        pixel_values: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        """``inputs_embeds``, ``attention_mask`` and ``position_ids`` (3, B, L') for the model's forward,
        the prompts left-padded to a common length; ``rope_deltas`` (B, 1) for cached decoding.
        ``questions``: one text per video, for methods that read the question."""
        mm_token_type_ids = self.prompt_token_types(input_ids, mm_token_type_ids, pixel_values)
        model = self.model.model
        video_id = int(self.model.config.video_token_id)
        positions, _ = model.get_rope_index(
            input_ids, mm_token_type_ids, video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )  # (3, B, L)
        videos = self.video_tokens(pixel_values_videos, video_grid_thw, questions)
        layouts = self.video_layouts(video_grid_thw)
        embed = model.get_input_embeddings()
        rows, row_pos = [], []
        video = 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids, pos = input_ids[b][keep], positions[:, b][:, keep]
            pads = torch.nonzero(ids == video_id)[:, 0]
            pieces, piece_pos, cursor, start = [], [], 0, 0
            while start < pads.numel():  # one run of placeholders per video, in order
                lay = layouts[video]
                n = lay.frames * lay.tokens_per_frame
                span = pads[start:start + n]
                if span.numel() != n or int(span[-1] - span[0]) != n - 1:
                    raise ValueError(
                        f"video {video}: expected {n} consecutive <|video_pad|> placeholders in prompt {b}"
                    )
                first = int(span[0])
                pieces.append(embed(ids[cursor:first]))
                piece_pos.append(pos[:, cursor:first])
                video_pos = pos[:, first:first + n].T.reshape(lay.frames, lay.tokens_per_frame, 3)  # per cell
                pieces.append(videos[video].tokens.to(pieces[-1].dtype))
                piece_pos.append(self.token_positions(videos[video], video_pos).T)
                cursor, start, video = first + n, start + n, video + 1
            pieces.append(embed(ids[cursor:]))
            piece_pos.append(pos[:, cursor:])
            rows.append(torch.cat(pieces))
            row_pos.append(torch.cat(piece_pos, 1))
        batch = self.padded_prompts(rows, row_pos, 0.0, attention_mask)
        return {"inputs_embeds": batch.pop("rows"), **batch}

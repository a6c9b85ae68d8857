"""The compression seam for transformers' own ``Qwen2_5_VLForConditionalGeneration``.

Nothing of transformers is patched: :class:`Qwen25VLCompression` wraps a loaded model instance, holds
its compression setting, and turns what the processor returns (``input_ids`` with one
``<|video_pad|>`` per merged token, ``pixel_values_videos``, ``video_grid_thw``) into what the model's
``forward`` accepts after compression: ``inputs_embeds`` with the compressed video tokens in place of
the placeholders, and the 3-D rotary ``position_ids`` (time, row, column) that transformers'
``get_rope_index`` gives the uncompressed prompt, carried to every kept token from the cell it stands
for (a token that absorbed others takes its anchor's position). Text keeps its positions, so the
text after a video continues from the offset the uncompressed prompt has.

The layout handed to the compressor (:meth:`Qwen25VLCompression.video_layouts`): one layout frame per
temporal token (``temporal_patch_size`` sampled frames each), the merged grid of that video (dynamic
resolution: its own ``video_grid_thw``), no pooling (the merger already merged 2x2 patches), no
newline tokens.
"""

from __future__ import annotations

from typing import Any

import torch

import visionzip
from llava.model.qwen_vl_scores import default_score_layers, video_features_with_scores
from llava.model.visual_stats import VisualStats, timing_span


class Qwen25VLCompression:
    """A per-instance compression setting for a transformers Qwen2.5-VL model.

    ``seam = Qwen25VLCompression(model)``; ``seam.set_compression("aot@0.25")``;
    ``model(**seam.prepare(**processor_outputs))``. Without a setting ``prepare`` still builds the
    inputs (the uncompressed sequence, transformers' own positions).
    """

    def __init__(self, model: Any, *, score_layers: tuple[int, int] | None = None) -> None:
        for name in ("model", "config"):
            if not hasattr(model, name):
                raise ValueError(f"expected a transformers Qwen2_5_VLForConditionalGeneration; got {type(model).__name__}")
        if getattr(model.config, "model_type", None) != "qwen2_5_vl":
            raise ValueError(
                f"model_type={getattr(model.config, 'model_type', None)!r} is not valid here; expected 'qwen2_5_vl'"
            )
        self.model = model
        self.compression: Any = None
        vision = model.config.vision_config
        self.score_layers = tuple(score_layers) if score_layers is not None else default_score_layers(vision)
        self.last_results: list[visionzip.CompressionResult] = []
        #: one :class:`~llava.model.visual_stats.VisualStats` per video of the last ``prepare``
        self.last_visual_stats: list[VisualStats] = []
        #: time the vision tower and the compression (CUDA events on a GPU); None: when not training
        self.time_visual: bool | None = None

    def set_compression(self, spec: Any) -> Any:
        """A preset, YAML path, ``"<method>@<retention>"``, config object, or None / "none"."""
        cfg = visionzip.load_config(spec)
        if cfg is not None:
            visionzip.registry.method_of(cfg)
        self.compression = cfg
        return cfg

    def video_layouts(self, video_grid_thw: torch.Tensor) -> list[visionzip.VideoLayout]:
        """One layout per video: temporal tokens as frames, the merged grid, no pooling, no newline."""
        merge = int(self.model.config.vision_config.spatial_merge_size)
        temporal = int(self.model.config.vision_config.temporal_patch_size)
        layouts = []
        for t, h, w in video_grid_thw.tolist():
            layouts.append(visionzip.VideoLayout(frames=int(t), grid=(int(h) // merge, int(w) // merge), pool_mode="none",
                                                 newline_position="no_token", temporal_patch=temporal))
        return layouts

    def check_videos(self, video_grid_thw: torch.Tensor) -> None:
        """What a compression asks of the videos, checked before the vision tower runs: at least two
        temporal tokens per video (a method works across them)."""
        if self.compression is None:
            return
        temporal = int(self.model.config.vision_config.temporal_patch_size)
        for i, (t, h, w) in enumerate(video_grid_thw.tolist()):
            if int(t) < 2:
                raise ValueError(
                    f"video {i} has {int(t)} temporal token (video_grid_thw {int(t)}x{int(h)}x{int(w)}: at most "
                    f"{temporal} sampled frames); compression={self.compression.method!r} expected at least 2 temporal "
                    f"tokens ({2 * temporal} sampled frames), or compression none"
                )

    def _video_tokens(self, pixel_values_videos: torch.Tensor, grid: torch.Tensor,
                      questions: list[str | None] | None = None) -> list[torch.Tensor]:
        visual = self.model.model.visual
        layouts = self.video_layouts(grid)
        cfg = self.compression
        self.check_videos(grid)
        spec = None if cfg is None else visionzip.registry.method_of(cfg)
        cuda = pixel_values_videos.is_cuda
        timed = (not self.model.training) if self.time_visual is None else bool(self.time_visual)
        vision = timing_span(timed, cuda)
        if spec is not None and spec.score_roles:
            layers = dict(zip(("shallow", "deep"), self.score_layers))
            wanted = [layers[r] for r in spec.score_roles]
            feats, scores = video_features_with_scores(visual, pixel_values_videos, grid, wanted)
            maps = dict(zip(spec.score_roles, scores))
        else:
            feats = visual(pixel_values_videos.type(visual.dtype), grid_thw=grid).pooler_output
            maps = {}
        if vision is not None:
            vision.stop()
        sizes = [lay.frames * lay.tokens_per_frame for lay in layouts]
        per_video = [f.view(lay.frames, lay.tokens_per_frame, -1) for f, lay in zip(feats.split(sizes), layouts)]
        count = len(layouts)
        if cfg is None:
            self.last_results = []
            self.last_visual_stats = [
                VisualStats("video", lay.frames * lay.temporal_patch, n, n, {"input": n}, 1.0, vision_span=vision,
                            per_sample=count)
                for lay, n in zip(layouts, sizes)
            ]
            return [f.flatten(0, 1) for f in per_video]

        def split(name: str) -> list[torch.Tensor] | None:
            if name not in maps:
                return None
            return [s.view(lay.frames, lay.tokens_per_frame) for s, lay in zip(maps[name].split(sizes), layouts)]

        span = timing_span(timed, cuda)
        question = None
        if spec is not None and spec.reads_question and questions is not None:
            if len(questions) != count:
                raise ValueError(f"questions: {len(questions)} given for {count} videos; expected one per video")
            question = list(questions)
        results = visionzip.compress_video(per_video, split("shallow"), split("deep"), config=cfg, layout=layouts,
                                           question=question)
        if span is not None:
            span.stop()
        self.last_results = list(results)
        self.last_visual_stats = [
            VisualStats("video", lay.frames * lay.temporal_patch, n, int(r.tokens.shape[0]), dict(r.stage_tokens),
                        float(r.retention), vision_span=vision, compression_span=span, per_sample=count,
                        per_compressed=count, result=r)
            for lay, n, r in zip(layouts, sizes, results)
        ]
        return [r.tokens for r in results]

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
        if pixel_values is not None:
            raise ValueError(
                "pixel_values (images) were given to the Qwen2.5-VL compression seam, which splices videos only; "
                "expected a prompt with videos and no images (run image prompts through the model's own generate)"
            )
        model = self.model.model
        video_id = int(self.model.config.video_token_id)
        if mm_token_type_ids is None:
            mm_token_type_ids = (input_ids == video_id).int() * 2
        positions, _ = model.get_rope_index(
            input_ids, mm_token_type_ids, video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )  # (3, B, L)
        tokens = self._video_tokens(pixel_values_videos, video_grid_thw, questions)
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
                    raise ValueError(f"video {video}: expected {n} consecutive <|video_pad|> placeholders in prompt {b}")
                first = int(span[0])
                pieces.append(embed(ids[cursor:first]))
                piece_pos.append(pos[:, cursor:first])
                video_pos = pos[:, first:first + n].T.reshape(lay.frames, lay.tokens_per_frame, 3)  # per cell
                result = self.last_results[video] if self.compression is not None else None
                pieces.append(tokens[video].to(pieces[-1].dtype))
                piece_pos.append(video_pos.reshape(-1, 3).T if result is None else result.plan.gather(video_pos).T)
                cursor, start, video = first + n, start + n, video + 1
            pieces.append(embed(ids[cursor:]))
            piece_pos.append(pos[:, cursor:])
            rows.append(torch.cat(pieces))
            row_pos.append(torch.cat(piece_pos, 1))
        longest = max(r.shape[0] for r in rows)
        dim = rows[0].shape[-1]
        embeds = rows[0].new_zeros(len(rows), longest, dim)
        mask = torch.zeros(len(rows), longest, dtype=attention_mask.dtype, device=attention_mask.device)
        pos_out = torch.ones(3, len(rows), longest, dtype=positions.dtype, device=positions.device)
        deltas = torch.zeros(len(rows), 1, dtype=positions.dtype, device=positions.device)
        for b, (r, p) in enumerate(zip(rows, row_pos)):
            n = r.shape[0]
            embeds[b, longest - n:], mask[b, longest - n:], pos_out[:, b, longest - n:] = r, 1, p
            deltas[b, 0] = p.max() + 1 - n
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos_out, "rope_deltas": deltas}

    @torch.no_grad()
    def generate(self, **inputs: Any) -> torch.Tensor:
        """``model.generate`` on the compressed prompt: the processor's outputs plus generation
        arguments. Returns the new tokens only (as with ``inputs_embeds`` in transformers). Each
        decoding step's positions continue from the prompt's last (time, row, column) + 1, as the
        model's own ``rope_deltas`` would place them."""
        names = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids",
                 "second_per_grid_ts", "questions", "pixel_values")
        prepared = self.prepare(**{k: inputs.pop(k) for k in names if k in inputs})
        prepared.pop("rope_deltas")
        return self.model.generate(**prepared, **inputs)

"""What the Qwen-VL compression seams share (:class:`QwenVLCompression`): the per-instance setting, the
layout handed to the compressor, the vision tower run with the attention scores a method reads, the
compression itself with its records (both through :class:`llava.model.seam.VisualSeam`), each video's
positions in the prompt, and the left-padded batch the prompts end in.

A family (:mod:`llava.model.qwen_vl.qwen2_5_vl`, :mod:`llava.model.qwen_vl.qwen3_vl`) subclasses it with the
``model_type`` it accepts and the way its compressed prompt reaches transformers' own ``forward`` and
``generate``. Nothing of transformers is patched: the seam wraps a loaded model instance.

The layout (:meth:`QwenVLCompression.video_layouts`): one layout frame per temporal token
(``temporal_patch_size`` sampled frames each), the merged grid of that video (dynamic resolution: its
own ``video_grid_thw`` / ``spatial_merge_size``), no pooling (the merger already merged 2x2 patches),
no newline tokens.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

import visionzip
from llava.model.qwen_vl.scores import default_score_layers, vision_output_with_scores
from llava.model.record import SampleRecord
from llava.model.seam import SeamVideo, VisualSeam

__all__ = ["QwenVLCompression", "qwen_video_layout"]


def qwen_video_layout(t: int, rows: int, cols: int, temporal_patch: int) -> visionzip.VideoLayout:
    """A Qwen-VL video's layout: ``t`` temporal tokens as frames, the merged ``rows`` x ``cols`` grid, no
    pooling (the merger already merged 2x2 patches), no newline."""
    return visionzip.VideoLayout(frames=int(t), grid=(int(rows), int(cols)), pool_mode="none",
                                 newline_position="no_token", temporal_patch=int(temporal_patch))


class QwenVLCompression:
    """A per-instance compression setting for a transformers Qwen-VL model (subclassed per family)."""

    #: the ``config.model_type`` values a family accepts
    MODEL_TYPES: ClassVar[tuple[str, ...]] = ()
    #: what the family is called in messages
    FAMILY: ClassVar[str] = "Qwen-VL"

    def __init__(self, model: Any, *, score_layers: tuple[int, int] | None = None) -> None:
        for name in ("model", "config"):
            if not hasattr(model, name):
                raise ValueError(f"expected a transformers {self.FAMILY} model; got {type(model).__name__}")
        model_type = getattr(model.config, "model_type", None)
        if model_type not in self.MODEL_TYPES:
            expected = " or ".join(repr(t) for t in self.MODEL_TYPES)
            raise ValueError(f"model_type={model_type!r} is not valid here; expected {expected}")
        self.model = model
        self.compression: Any = None
        vision = model.config.vision_config
        self.score_layers = tuple(score_layers) if score_layers is not None else default_score_layers(vision)
        self.last_results: list[visionzip.CompressionResult] = []
        #: one :class:`~llava.model.record.SampleRecord` per video of the last ``prepare``
        self.last_visual_stats: list[SampleRecord] = []
        #: time the vision tower and the compression (CUDA events on a GPU); None: when not training
        self.time_visual: bool | None = None

    # ------------------------------------------------------------------ setting and layout
    def set_compression(self, spec: Any) -> Any:
        """A preset, YAML path, ``"<method>@<retention>"``, config object, or None / "none"."""
        cfg = visionzip.load_config(spec)
        if cfg is not None:
            visionzip.registry.method_of(cfg)
        self.compression = cfg
        return cfg

    @property
    def merge(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    @property
    def temporal(self) -> int:
        return int(self.model.config.vision_config.temporal_patch_size)

    def video_layouts(self, video_grid_thw: torch.Tensor) -> list[visionzip.VideoLayout]:
        """One layout per video: temporal tokens as frames, the merged grid, no pooling, no newline."""
        return [qwen_video_layout(t, h // self.merge, w // self.merge, self.temporal)
                for t, h, w in video_grid_thw.tolist()]

    def check_videos(self, video_grid_thw: torch.Tensor) -> None:
        """What a compression asks of the videos, checked before the vision tower runs: at least two
        temporal tokens per video (a method works across them)."""
        if self.compression is None:
            return
        for i, (t, h, w) in enumerate(video_grid_thw.tolist()):
            if int(t) < 2:
                raise ValueError(
                    f"video {i} has {int(t)} temporal token (video_grid_thw {int(t)}x{int(h)}x{int(w)}: at most "
                    f"{self.temporal} sampled frames); compression={self.compression.method!r} expected at least 2 "
                    f"temporal tokens ({2 * self.temporal} sampled frames), or compression none"
                )

    #: what ``generate`` hands to ``prepare`` (the rest goes to the model's ``generate``)
    PREPARE_INPUTS: ClassVar[tuple[str, ...]] = (
        "input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids",
        "second_per_grid_ts", "questions", "pixel_values",
    )

    def prompt_token_types(self, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None,
                           pixel_values: torch.Tensor | None) -> torch.Tensor:
        """The prompt's ``mm_token_type_ids`` (video placeholders 2, text 0, when the processor gave none),
        after refusing images: the seam splices videos only."""
        if pixel_values is not None:
            raise ValueError(
                f"pixel_values (images) were given to the {self.FAMILY} compression seam, which splices videos only; "
                "expected a prompt with videos and no images (run image prompts through the model's own generate)"
            )
        if mm_token_type_ids is None:
            mm_token_type_ids = (input_ids == int(self.model.config.video_token_id)).int() * 2
        return mm_token_type_ids

    def split_generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Take out of ``inputs`` what ``prepare`` reads (the processor's outputs and ``questions``)."""
        return {k: inputs.pop(k) for k in self.PREPARE_INPUTS if k in inputs}

    # ------------------------------------------------------------------ the visual path
    @staticmethod
    def _levels_of(output: Any, total: int) -> list[torch.Tensor]:
        """The extra feature levels of the tower's output (Qwen3-VL's ``deepstack_features``), each
        checked to hold one row per main feature row."""
        levels = list(getattr(output, "deepstack_features", None) or [])
        for k, level in enumerate(levels):
            if level.shape[0] != total:
                raise ValueError(
                    f"deepstack level {k} has {level.shape[0]} tokens; expected {total}, the main features' count "
                    "(every level is reduced with the main features' plan)"
                )
        return levels

    def video_tokens(self, pixel_values_videos: torch.Tensor, grid: torch.Tensor,
                     questions: list[str | None] | None = None) -> list[SeamVideo]:
        """Run the vision tower (with the scores the method reads) and the seam; set
        :attr:`last_results` and :attr:`last_visual_stats`. Each video's ``levels`` are Qwen3-VL's
        deepstack features (none on Qwen2.5-VL), reduced as its tokens are."""
        visual = self.model.model.visual
        layouts = self.video_layouts(grid)
        self.check_videos(grid)
        timed = (not self.model.training) if self.time_visual is None else bool(self.time_visual)
        seam = VisualSeam(self.compression, timed=timed, cuda=pixel_values_videos.is_cuda, samples=len(layouts))
        roles = seam.score_roles
        with seam.vision():
            if roles:
                layers = dict(zip(("shallow", "deep"), self.score_layers))
                output, scores = vision_output_with_scores(visual, pixel_values_videos, grid,
                                                           [layers[r] for r in roles])
            else:
                output, scores = visual(pixel_values_videos.type(visual.dtype), grid_thw=grid), ()
        feats = output.pooler_output
        levels = self._levels_of(output, feats.shape[0])
        sizes = [lay.frames * lay.tokens_per_frame for lay in layouts]
        if sum(sizes) != feats.shape[0]:
            raise ValueError(
                f"the vision tower returned {feats.shape[0]} tokens; expected {sum(sizes)} from video_grid_thw"
            )

        def per_video(x: torch.Tensor, *tail: int) -> list[torch.Tensor]:
            return [f.view(lay.frames, lay.tokens_per_frame, *tail) for f, lay in zip(x.split(sizes), layouts)]

        out = seam.videos(
            per_video(feats, -1), {role: per_video(score) for role, score in zip(roles, scores)}, layouts,
            questions=questions, levels=[per_video(level, -1) for level in levels],
        )
        self.last_results = [v.record.result for v in out if v.record.result is not None]
        self.last_visual_stats = [v.record for v in out]
        return out

    @staticmethod
    def token_positions(video: SeamVideo, cell_positions: torch.Tensor) -> torch.Tensor:
        """(T, 3) rotary positions of a video's tokens from its cells' (F, N, 3): every kept token its own
        cell's, a token that absorbed others its anchor's (the plan's provenance)."""
        assert video.result.plan is not None
        return video.result.plan.gather(cell_positions)

    @staticmethod
    def left_pad(rows: list[torch.Tensor], fill: float | int, longest: int) -> torch.Tensor:
        """Stack per-prompt rows (L_b, ...) into (B, longest, ...), padded on the left with ``fill``."""
        out = rows[0].new_full((len(rows), longest, *rows[0].shape[1:]), fill)
        for b, r in enumerate(rows):
            out[b, longest - r.shape[0]:] = r
        return out

    def padded_prompts(self, rows: list[torch.Tensor], row_pos: list[torch.Tensor], fill: float | int,
                       attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The compressed prompts as one left-padded batch: ``rows`` (L_b, ...) per prompt padded with
        ``fill`` (returned as ``"rows"``), the ``attention_mask`` (B, L') in its dtype, the
        ``position_ids`` (3, B, L') from ``row_pos`` (3, L_b) (padding at 1), and ``rope_deltas`` (B, 1),
        which continue cached decoding from each prompt's last (time, row, column) + 1."""
        longest = max(r.shape[0] for r in rows)
        ones = [torch.ones(r.shape[0], dtype=attention_mask.dtype, device=attention_mask.device) for r in rows]
        positions = self.left_pad([p.T for p in row_pos], 1, longest).permute(2, 0, 1).contiguous()
        deltas = torch.stack([p.max() + 1 - p.shape[1] for p in row_pos]).view(-1, 1)
        return {"rows": self.left_pad(rows, fill, longest), "attention_mask": self.left_pad(ones, 0, longest),
                "position_ids": positions, "rope_deltas": deltas}

    def prepare(self, **inputs: Any) -> dict[str, Any]:
        """The family's compressed prompt for the model's ``forward`` / ``generate`` (its own ``prepare``)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, **inputs: Any) -> torch.Tensor:
        """``model.generate`` on the compressed prompt: the processor's outputs plus generation arguments.
        Returns the new tokens only. Each decoding step's positions continue from the prompt's last
        (time, row, column) + 1, as the model's own ``rope_deltas`` would place them."""
        prepared = self.prepare(**self.split_generate_inputs(inputs))
        for name in ("rope_deltas", "kept_blocks"):
            prepared.pop(name, None)
        out = self.model.generate(**prepared, **inputs)
        # given input_ids the model returns them before the new tokens; given inputs_embeds, the new tokens only
        return out[:, prepared["input_ids"].shape[1]:] if "input_ids" in prepared else out

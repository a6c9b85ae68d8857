"""LLaVA-NeXT's multimodal architecture (vision tower -> projector -> pooling/newlines -> splice into
the LLM's input embeddings), with AOT compression at one seam.

The seam (:class:`llava.model.seam.VisualSeam`): for video samples, after the projector and before the
visual embeddings are spliced, the frames' features, the model's token layout
(:meth:`LlavaMetaForCausalLM.video_layout`: grid, ``mm_spatial_pool_mode`` / ``mm_spatial_pool_stride``,
``mm_newline_position``, newline embedding) and the attention scores the method reads (the tower
captures only those layers) go to :func:`visionzip.compress_video` with the compression config set on
the model instance, or, without one, with visionzip's ``full`` method, which lays the video out as
LLaVA-NeXT does (the same pooling arithmetic and newlines, bit for bit, under autograd too). The method
is looked up in visionzip's registry; nothing here depends on which method it is. Images keep
LLaVA-NeXT's single-image / anyres merge.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as Fn

import visionzip
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.record import SampleRecord
from llava.model.seam import VisualSeam


def resolve_compression(spec: Any) -> Any:
    """A compression setting as users give it (preset name, YAML path, ``"<method>@<retention>"``,
    a dict of a config's fields with its ``method``, a config object, or None / "none") -> a
    visionzip config or None."""
    if isinstance(spec, dict):
        data = dict(spec)
        method = data.pop("method", "aot")
        return visionzip.config_class(method).from_dict(data, source="aot_compression")
    return visionzip.load_config(spec)


def _config_dict(cfg: Any) -> dict:
    return {"method": cfg.method, **cfg.to_dict()}


def unpad_image(tensor: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Remove the padding anyres added around an image. tensor: (C, H, W); original_size (W, H)."""
    original_width, original_height = original_size
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


class LlavaMetaModel:
    """Mixin for the inner model: builds the vision tower, projector and newline parameter."""

    def _init_multimodal(self, config) -> None:
        if getattr(config, "mm_vision_tower", None) is None:
            return
        self.vision_tower = build_vision_tower(config)
        config.mm_hidden_size = self.vision_tower.hidden_size
        self.mm_projector = build_vision_projector(config)
        if "unpad" in config.mm_patch_merge_type:
            self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    def get_vision_tower(self):
        return getattr(self, "vision_tower", None)


class LlavaMetaForCausalLM:
    """Mixin for the causal LM: encoding of images and videos and their splicing into the prompt."""

    # -- compression (a per-instance setting; the class is never patched)
    def set_compression(self, spec: Any) -> Any:
        """Switch compression on (preset name, YAML path, ``"<method>@<retention>"``, dict, config
        object of any registered method) or off (None / "none") for this model instance. The
        setting is also recorded in ``config.aot_compression`` so that a saved checkpoint keeps it.
        The token layout always comes from the model (:meth:`video_layout`); a config whose layout
        fields say otherwise gets a warning."""
        cfg = resolve_compression(spec)
        if cfg is not None:
            visionzip.registry.method_of(cfg)  # a registered method's config, or a ValueError listing them
        self._aot_config = cfg
        self.config.aot_compression = None if cfg is None else _config_dict(cfg)
        if cfg is not None:
            layout = self.video_layout(1)
            given = {"pool_mode": layout.pool_mode, "pool_stride": layout.pool_stride,
                     "newline_position": layout.newline_position}
            differ = {k: getattr(cfg, k, None) for k, v in given.items() if getattr(cfg, k, None) not in (None, v)}
            if differ:
                said = ", ".join(f"{k}={getattr(v, 'value', v)!r}" for k, v in differ.items())
                model = ", ".join(f"{k}={getattr(given[k], 'value', given[k])!r}" for k in differ)
                warnings.warn(
                    f"compression config sets {said}; the model's layout ({model}) is used: the token layout "
                    "comes from the model (override it with mm_spatial_pool_mode / mm_spatial_pool_stride / "
                    "mm_newline_position in the model config)",
                    stacklevel=2,
                )
        return cfg

    @property
    def compression(self) -> Any:
        return getattr(self, "_aot_config", None)

    #: time the visual path (vision tower, compression): None = when not training
    time_visual: bool | None = None

    def video_layout(self, frames: int) -> visionzip.VideoLayout:
        """The token layout of a ``frames``-frame video as this model lays it out without
        compression: the tower's grid, ``mm_spatial_pool_mode`` / ``mm_spatial_pool_stride``,
        ``mm_newline_position`` and the learned newline (present with an ``unpad`` merge type)."""
        side = self.get_vision_tower().num_patches_per_side
        config = self.config
        newline = getattr(self.get_model(), "image_newline", None) if "unpad" in config.mm_patch_merge_type else None
        try:
            return visionzip.VideoLayout(frames=frames, grid=(side, side), pool_mode=config.mm_spatial_pool_mode,
                                         pool_stride=config.mm_spatial_pool_stride,
                                         newline_position=config.mm_newline_position, newline=newline)
        except ValueError as err:
            raise ValueError(f"model config: {err}") from None

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    # -- encoders
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> projected features (B, N, D)."""
        return self.get_model().mm_projector(self.get_vision_tower()(images))

    def _image_tokens(self, feature: torch.Tensor, image_size: Any) -> torch.Tensor:
        """LLaVA-NeXT's single-image / anyres merge for one image, (P, N, D) -> (T, D)."""
        from llava.mm_utils import get_anyres_image_grid_shape

        merge = self.config.mm_patch_merge_type
        newline = getattr(self.get_model(), "image_newline", None)
        if merge == "flat":
            return feature.flatten(0, 1)
        if feature.shape[0] == 1:
            out = feature[0]
            if "unpad" in merge:
                out = torch.cat([out, newline[None].to(out.dtype)], 0)
            return out
        base, patches = feature[0], feature[1:]
        side = self.get_vision_tower().num_patches_per_side
        aspect = getattr(self.config, "image_aspect_ratio", "square")
        max_match = re.match(r"anyres_max_(\d+)", aspect or "")
        if aspect == "anyres" or max_match:
            if image_size is None:
                raise ValueError("image_sizes is required for anyres images; expected (width, height) per image")
            gw, gh = get_anyres_image_grid_shape(image_size, self.config.image_grid_pinpoints,
                                                 self.get_vision_tower().image_size)
            patches = patches.view(gh, gw, side, side, -1)
        else:
            patches = patches.view(2, 2, side, side, -1)
        if "unpad" in merge:
            x = patches.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)  # (D, H', W')
            x = unpad_image(x, image_size)
            if max_match:
                c, h, w = x.shape
                times = math.sqrt(h * w / (int(max_match.group(1)) * side**2))
                if times > 1.1:
                    x = Fn.interpolate(x[None], [int(h // times), int(w // times)], mode="bilinear")[0]
            x = torch.cat([x, newline[:, None, None].expand(*x.shape[:-1], 1).to(x.dtype)], -1)
            patches = x.flatten(1, 2).transpose(0, 1)
        else:
            patches = patches.permute(0, 2, 1, 3, 4).contiguous().flatten(0, 3)
        return patches if "nobase" in merge else torch.cat([base, patches], 0)

    def encode_multimodal(
        self, images: list[torch.Tensor] | torch.Tensor, modalities: list[str], image_sizes: list | None = None,
        questions: list[str | None] | None = None,
    ) -> tuple[list[torch.Tensor], list[SampleRecord]]:
        """Visual tokens and the seam's record per visual input (also kept in ``last_visual_stats``).
        ``images``: one tensor per input ((F, 3, H, W) for a video, (P, 3, H, W) or (3, H, W) for an
        image); ``modalities``: "video" or "image" per input; ``questions``: the question text per
        input, for a method that reads it. Videos go through :class:`llava.model.seam.VisualSeam`."""
        if isinstance(images, torch.Tensor):
            images = list(images) if images.dim() == 5 else [images]
        images = [x.unsqueeze(0) if x.dim() == 3 else x for x in images]
        if len(modalities) != len(images):
            if len(modalities) == 1:
                modalities = modalities * len(images)
            else:
                raise ValueError(
                    f"modalities has {len(modalities)} entries for {len(images)} visual inputs; expected one per input"
                )
        for i, m in enumerate(modalities):
            if m not in ("image", "video"):
                raise ValueError(f"modalities[{i}]={m!r} is not valid; expected 'image' or 'video'")
        tower = self.get_vision_tower()
        sizes = [x.shape[0] for x in images]
        batch = torch.cat(images).to(device=tower.device, dtype=tower.dtype)
        timed = (not self.training) if self.time_visual is None else bool(self.time_visual)
        seam = VisualSeam(self.compression, timed=timed, cuda=batch.is_cuda, samples=len(images))
        videos = [i for i, m in enumerate(modalities) if m == "video"]
        roles = seam.score_roles if videos else ()
        maps: dict[str, list[torch.Tensor]] = {}
        with seam.vision():
            if roles:
                if not callable(getattr(tower, "forward_with_scores", None)):
                    assert seam.spec is not None
                    readers = ", ".join(m for m in visionzip.list_methods() if visionzip.get_method(m).scores == "none")
                    raise ValueError(
                        f"method {seam.spec.name!r} reads attention scores (scores={seam.spec.scores!r}) but this "
                        f"model's vision tower ({type(tower).__name__}) cannot give them; expected a method that "
                        f"reads none ({readers})"
                    )
                feats, scores = tower.forward_with_scores(batch, score_layers=seam.score_layers())
                maps = {role: list(score.split(sizes)) for role, score in zip(roles, scores)}
            else:
                feats = tower(batch)
            feats = self.get_model().mm_projector(feats)  # (sum F, N, D)
        per_sample = list(feats.split(sizes))

        tokens: list[torch.Tensor | None] = [None] * len(images)
        records: list[SampleRecord | None] = [None] * len(images)
        if videos:
            out = seam.videos(
                [per_sample[i] for i in videos], {role: [m[i] for i in videos] for role, m in maps.items()},
                [self.video_layout(sizes[i]) for i in videos],
                questions=None if questions is None else [questions[i] for i in videos],
            )
            for i, video in zip(videos, out):
                tokens[i], records[i] = video.tokens, video.record
        for i, m in enumerate(modalities):
            if m == "image":
                size = image_sizes[i] if image_sizes is not None and i < len(image_sizes) else None
                tokens[i] = self._image_tokens(per_sample[i], size)
                records[i] = seam.image_record(int(tokens[i].shape[0]))
        self.last_visual_stats = records
        return tokens, records  # type: ignore[return-value]

    # -- splicing
    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels, images,
        modalities=("image",), image_sizes=None, padding_side: str | None = None, questions=None,
        visual_tokens: list[torch.Tensor] | None = None,
    ):
        """LLaVA-NeXT's splice: replace each ``IMAGE_TOKEN_INDEX`` of a prompt by the visual tokens of
        the next visual input. Returns ``(None, position_ids, attention_mask, past_key_values,
        inputs_embeds, labels)``. ``padding_side`` "left" is what batched generation needs; the
        default follows ``config.tokenizer_padding_side`` ("right"), as in training.
        ``visual_tokens``: what :meth:`encode_multimodal` returned for ``images``, when the caller
        encoded them first (to build a prompt from the result); they are spliced as they are."""
        vision_tower = self.get_vision_tower()
        if vision_tower is None or images is None or input_ids.shape[1] == 1:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels
        modalities = list(modalities) if not isinstance(modalities, str) else [modalities]
        if visual_tokens is None:
            features, _ = self.encode_multimodal(images, modalities, image_sizes, questions)
        else:
            features = list(visual_tokens)

        given_labels, given_mask, given_pos = labels, attention_mask, position_ids
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            attention_mask = attention_mask.bool()
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
        ids_list = [ids[m] for ids, m in zip(input_ids, attention_mask)]
        labels_list = [lab[m] for lab, m in zip(labels, attention_mask)]

        counts = [int((ids == IMAGE_TOKEN_INDEX).sum()) for ids in ids_list]
        if sum(counts) != len(features):
            raise ValueError(
                f"the prompts hold {sum(counts)} image placeholder(s) ({IMAGE_TOKEN_INDEX}) but {len(features)} "
                "visual input(s) were given; expected one placeholder per image or video"
            )
        embed = self.get_model().embed_tokens
        new_embeds, new_labels = [], []
        feature_idx = 0
        for ids, lab in zip(ids_list, labels_list):
            where = torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist()
            bounds = [-1] + where + [ids.shape[0]]
            text_ids = [ids[bounds[i] + 1 : bounds[i + 1]] for i in range(len(bounds) - 1)]
            text_labels = [lab[bounds[i] + 1 : bounds[i + 1]] for i in range(len(bounds) - 1)]
            text_embeds = embed(torch.cat(text_ids)).split([t.shape[0] for t in text_ids])
            pieces, piece_labels = [], []
            for i in range(len(text_ids)):
                pieces.append(text_embeds[i])
                piece_labels.append(text_labels[i])
                if i < len(where):
                    feat = features[feature_idx].to(text_embeds[i].dtype)
                    feature_idx += 1
                    pieces.append(feat)
                    piece_labels.append(torch.full((feat.shape[0],), IGNORE_INDEX, device=lab.device, dtype=lab.dtype))
            new_embeds.append(torch.cat(pieces))
            new_labels.append(torch.cat(piece_labels))

        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len is not None:
            new_embeds = [x[:max_len] for x in new_embeds]
            new_labels = [x[:max_len] for x in new_labels]

        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right")
        longest = max(x.shape[0] for x in new_embeds)
        bsz, dim = len(new_embeds), new_embeds[0].shape[1]
        device, dtype = new_embeds[0].device, new_embeds[0].dtype
        embeds = torch.zeros(bsz, longest, dim, dtype=dtype, device=device)
        out_labels = torch.full((bsz, longest), IGNORE_INDEX, dtype=new_labels[0].dtype, device=device)
        out_mask = torch.zeros(bsz, longest, dtype=torch.bool, device=device)
        out_pos = torch.zeros(bsz, longest, dtype=torch.long, device=device)
        for i, (x, lab) in enumerate(zip(new_embeds, new_labels)):
            n = x.shape[0]
            sl = slice(longest - n, longest) if side == "left" else slice(0, n)
            embeds[i, sl], out_labels[i, sl], out_mask[i, sl] = x, lab, True
            out_pos[i, sl] = torch.arange(n, device=device)
        return (
            None,
            None if given_pos is None else out_pos,
            None if given_mask is None and side != "left" and bsz == 1
            else out_mask.to(given_mask.dtype if given_mask is not None else torch.long),
            past_key_values,
            embeds,
            None if given_labels is None else out_labels,
        )

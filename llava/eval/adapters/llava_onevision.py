"""``aot_llava_onevision``: LLaVA-OneVision through lmms-eval, with AOT.

Frames are sampled and prompts built as lmms-eval 0.7.3's built-in ``llava_onevision`` does
(``max_frames_num`` frames uniformly over the video, one ``<image>`` per video, images through
``process_images``), so ``compression=none`` scores what the built-in scores::

    ARGS=pretrained=lmms-lab/llava-onevision-qwen2-7b-ov,conv_template=qwen_1_5,model_name=llava_qwen
    python -m lmms_eval --model aot_llava_onevision --model_args $ARGS,compression=paper_ov_10pct \\
        --tasks mvbench --batch_size 1 --log_samples --output_path runs/eval

What every plugin model adds (batching, ``--device cpu``, failed samples, efficiency accounting) is
:mod:`llava.eval.adapters.base`'s.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch
from lmms_eval import utils as lmms_utils
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.adapters.base import Prepared, str2bool
from llava.eval.adapters.llava_common import LlavaAdapter
from llava.mm_utils import process_images
from llava.video import load_video

__all__ = ["AOTLlavaOneVision"]

_NEVER_READ = "lmms-eval's llava_onevision accepts it but never reads it"


class AOTLlavaOneVision(LlavaAdapter):
    """LLaVA-OneVision through lmms-eval, with AOT. Arguments as lmms-eval's ``llava_onevision`` (less
    the ones it never reads), plus ``compression``, ``torch_dtype`` and ``use_flash_attention_2``.

    ``mm_spatial_pool_stride`` and ``mm_spatial_pool_mode`` go into the model config; ``token_strategy``
    and ``video_decode_backend`` take the one value the built-in's evaluation uses (``single``,
    ``decord``)."""

    MODEL_ID = "aot_llava_onevision"
    RETIRED_MODEL_ARGS = {"truncation": _NEVER_READ, "truncate_context": _NEVER_READ}

    def __init__(
        self,
        pretrained: str = "lmms-lab/llava-onevision-qwen2-7b-ov",
        compression: str = "none",
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        model_name: str | None = None,
        attn_implementation: str | None = "sdpa",
        use_flash_attention_2: bool | None = None,
        device_map: str | None = None,
        conv_template: str = "qwen_1_5",
        use_cache: bool = True,
        customized_config: str | None = None,
        max_frames_num: int = 32,
        mm_spatial_pool_stride: int = 2,
        mm_spatial_pool_mode: str = "bilinear",
        token_strategy: str = "single",
        video_decode_backend: str = "decord",
        torch_dtype: str = "float16",
    ) -> None:
        super().__init__()
        if use_flash_attention_2 is not None and str2bool(use_flash_attention_2):
            attn_implementation = "flash_attention_2"
        if token_strategy != "single":
            raise ValueError(
                f"token_strategy={token_strategy!r} is not supported; expected 'single' (one <image> per video)"
            )
        self.max_frames_num = self._check_frames("max_frames_num", max_frames_num)
        self.mm_spatial_pool_stride = int(mm_spatial_pool_stride)
        self.mm_spatial_pool_mode = mm_spatial_pool_mode
        load_map = self._setup(compression=compression, device=device, device_map=device_map, batch_size=batch_size,
                               max_batch_size=max_batch_size)
        self._load_llava(
            pretrained=pretrained, model_name=model_name, attn_implementation=attn_implementation,
            torch_dtype=torch_dtype,
            customized_config=customized_config, conv_template=conv_template, use_cache=use_cache,
            video_decode_backend=video_decode_backend, load_map=load_map,
            overwrite_config={"mm_spatial_pool_stride": self.mm_spatial_pool_stride,
                              "mm_spatial_pool_mode": mm_spatial_pool_mode},
        )
        self._aspect_ratio = getattr(self._config, "image_aspect_ratio", None)

    def _prepare(self, index, context, visual, gen_kwargs, task, doc_id) -> Prepared:
        p = Prepared(index, context, task, doc_id)
        placeholders = 0
        if self._aspect_ratio is not None:
            self._config.image_aspect_ratio = self._aspect_ratio
        if visual:
            start = time.perf_counter()
            try:
                if isinstance(visual[0], Image.Image):  # images (or frames given as images): the built-in's image path
                    if len(visual) > 1 or self._aspect_ratio is None:
                        self._config.image_aspect_ratio = gen_kwargs.get("image_aspect_ratio", "pad")
                    tensor = process_images(visual, self._image_processor, self._config)
                    several = isinstance(tensor, list) or tensor.dim() == 5 or len(visual) > 1
                    per_image = list(tensor) if several else [tensor]
                    p.visuals = [t.to(dtype=torch.float16) for t in per_image]
                    p.modalities = ["image"] * len(visual)
                    p.image_sizes = [im.size for im in visual]
                    placeholders = len(visual)
                elif isinstance(visual[0], (str, os.PathLike)):
                    clip = load_video(visual[0], max_frames=self.max_frames_num, mode="uniform", num_threads=0)
                    frames = self._image_processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
                    p.visuals, p.modalities, placeholders = [frames.half()], ["video"], 1
                    p.frames_read = clip.frames_read
                else:
                    p.error = (f"doc_to_visual returned {type(visual[0]).__name__} items; expected video paths or "
                               "PIL images")
            except Exception as exc:  # noqa: BLE001 - a missing or corrupt video fails this sample only
                p.error = f"{type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - start) * 1000
            if p.error:
                return p
        question = context
        if p.visuals and DEFAULT_IMAGE_TOKEN not in context:
            question = " ".join([DEFAULT_IMAGE_TOKEN] * placeholders) + "\n" + context
        conv = self._new_conv()
        if lmms_utils.is_json(question):  # a conversation given as JSON turns
            for i, item in enumerate(json.loads(question)):
                conv.append_message(conv.roles[i % 2], item["value"])
        else:
            conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        p.prompt, p.question = conv.get_prompt(), question
        return p

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        kwargs: dict[str, Any] = {k: v for k, v in gen_kwargs.items() if k != "image_aspect_ratio"}
        kwargs.setdefault("max_new_tokens", 1024)
        if not kwargs.get("do_sample", False):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        return kwargs

"""``aot_llava_vid``: LLaVA-Video through lmms-eval, with AOT.

Frames are sampled and prompts built as lmms-eval 0.7.3's built-in ``llava_vid`` does (``video_fps``
frames a second capped at ``max_frames_num``, or ``max_frames_num`` uniformly with ``force_sample``;
frame folders and image lists as its MVBench frame path; the optional time instruction), so
``compression=none`` scores what the built-in scores::

    ARGS=pretrained=lmms-lab/LLaVA-Video-7B-Qwen2,conv_template=qwen_1_5,max_frames_num=64,force_sample=true
    python -m lmms_eval --model aot_llava_vid --model_args $ARGS,add_time_instruction=true,compression=video_25pct \\
        --tasks mvbench --batch_size 1 --log_samples --output_path runs/eval

What every plugin model adds (batching, ``--device cpu``, failed samples, efficiency accounting) is
:mod:`llava.eval.adapters.base`'s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.eval.adapters.base import Prepared, str2bool
from llava.eval.adapters.llava_common import LlavaAdapter
from llava.model.record import SampleRecord
from llava.video import load_video

__all__ = ["AOTLlavaVid"]

_NEVER_READ = "lmms-eval's llava_vid accepts it but never reads it"
_CONFIG_NEVER_READ = ("lmms-eval's llava_vid writes it into the model config (config.{}), which this package's "
                      "model never reads")

#: the config keys ``overwrite=True`` sets, with llava_vid's defaults
OVERWRITE_DEFAULTS: dict[str, Any] = {"mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "average",
                                      "mm_newline_position": "grid"}


class AOTLlavaVid(LlavaAdapter):
    """LLaVA-Video through lmms-eval, with AOT. Arguments as lmms-eval's ``llava_vid`` (less the ones it
    never reads or that nothing reads from the config), plus ``compression``, ``model_name`` and
    ``customized_config``.

    With ``overwrite=True`` (the default) ``mm_spatial_pool_stride``, ``mm_spatial_pool_mode`` and
    ``mm_newline_position`` go into the model config, defaulting to :data:`OVERWRITE_DEFAULTS`; with
    ``overwrite=False`` the checkpoint's config is kept and giving any of them is an error."""

    MODEL_ID = "aot_llava_vid"
    RETIRED_MODEL_ARGS = {
        "truncation": _NEVER_READ,
        "truncate_context": _NEVER_READ,
        "mm_resampler_type": _NEVER_READ,
        "mm_spatial_pool_out_channels": _NEVER_READ,
        "faster_token_stride": _NEVER_READ
        + " (it would only matter with add_faster_video=True, which is not supported)",
        "mm_resampler_location": _CONFIG_NEVER_READ.format("mm_pooling_position"),
        "delay_load": _CONFIG_NEVER_READ.format("delay_load"),
    }

    def __init__(
        self,
        pretrained: str = "lmms-lab/LLaVA-Video-7B-Qwen2",
        compression: str = "none",
        torch_dtype: str = "float16",
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        attn_implementation: str | None = "sdpa",
        device_map: str | None = None,
        conv_template: str = "vicuna_v1",
        use_cache: bool = True,
        max_frames_num: int = 20,
        video_fps: int = 1,
        mm_spatial_pool_stride: int | None = None,
        mm_spatial_pool_mode: str | None = None,
        mm_newline_position: str | None = None,
        overwrite: bool = True,
        video_decode_backend: str = "decord",
        tie_weights: bool = True,
        force_sample: bool = False,
        add_time_instruction: bool = False,
        add_faster_video: bool = False,
        model_name: str | None = None,
        customized_config: str | None = None,
    ) -> None:
        super().__init__()
        if str2bool(add_faster_video):
            raise ValueError(
                "add_faster_video=True is not supported; expected False (LLaVA-Video's evaluation setting)"
            )
        self.max_frames_num = self._check_frames("max_frames_num", max_frames_num)
        self.fps = int(video_fps)
        self.force_sample = str2bool(force_sample)
        self.add_time_instruction = str2bool(add_time_instruction)
        self.torch_dtype = torch_dtype
        given = {"mm_spatial_pool_stride": mm_spatial_pool_stride, "mm_spatial_pool_mode": mm_spatial_pool_mode,
                 "mm_newline_position": mm_newline_position}
        given = {k: v for k, v in given.items() if v is not None}
        overwrite_config: dict[str, Any] = {}
        if str2bool(overwrite):
            overwrite_config = OVERWRITE_DEFAULTS | given
            overwrite_config["mm_spatial_pool_stride"] = int(overwrite_config["mm_spatial_pool_stride"])
        elif given:
            raise ValueError(f"{sorted(given)} given with overwrite=False, which keeps the checkpoint's config; "
                             "expected overwrite=True to set them, or leave them out")
        load_map = self._setup(compression=compression, device=device, device_map=device_map, batch_size=batch_size,
                               max_batch_size=max_batch_size)
        self._load_llava(
            pretrained=pretrained, model_name=model_name, attn_implementation=attn_implementation,
            torch_dtype=torch_dtype,
            customized_config=customized_config, conv_template=conv_template, use_cache=use_cache,
            video_decode_backend=video_decode_backend, load_map=load_map, overwrite_config=overwrite_config,
        )
        if str2bool(tie_weights):
            self.model.tie_weights()

    def _pixels(self, frames: Any) -> torch.Tensor:
        pixels = self._image_processor.preprocess(frames, return_tensors="pt")["pixel_values"]
        return pixels.bfloat16() if self.torch_dtype == "bfloat16" else pixels.half()

    def _prepare(self, index, context, visual, gen_kwargs, task, doc_id) -> Prepared:
        p = Prepared(index, context, task, doc_id)
        start = time.perf_counter()
        try:
            if not visual:
                raise ValueError("the document has no video; expected one video path")
            if isinstance(visual[0], Image.Image) or (len(visual) > 1 and isinstance(visual[0], (str, os.PathLike))):
                # frames given one by one (images or image files): sample them as lmms-eval's MVBench frame path does
                # (3 fps timestamps); the files are taken in sorted order
                frames = visual if isinstance(visual[0], Image.Image) else sorted(visual, key=str)
                idx = np.linspace(0, len(frames) - 1, self.max_frames_num, dtype=int).tolist()
                array = np.stack([np.array(frames[i].convert("RGB") if isinstance(frames[i], Image.Image)
                                           else Image.open(frames[i]).convert("RGB")) for i in idx])
                duration, times = len(frames) / 3, [i / 3 for i in idx]
            else:
                path = Path(visual[0])
                if path.is_dir():
                    files = sorted(f for f in path.iterdir() if f.is_file())
                    if len(files) < 2:
                        raise ValueError(f"frame folder {path} holds {len(files)} file(s); expected frames")
                    return self._prepare(index, context, [str(f) for f in files], gen_kwargs, task, doc_id)
                clip = load_video(path, max_frames=self.max_frames_num, mode="fps", force_sample=self.force_sample,
                                  target_fps=self.fps, num_threads=1)
                array, duration, times = clip.frames, clip.duration, clip.timestamps
                p.frames_read = clip.frames_read
            p.visuals, p.modalities, p.image_sizes = [self._pixels(array)], ["video"], []
        except Exception as exc:  # noqa: BLE001 - a missing or corrupt video fails this sample only
            p.error = f"{type(exc).__name__}: {exc}"
            p.load_ms = (time.perf_counter() - start) * 1000
            return p
        p.load_ms = (time.perf_counter() - start) * 1000
        p.payload = {"duration": duration, "times": list(times)}
        if self.add_time_instruction:
            p.frame_times = [float(t) for t in times]
        p.prompt, p.question = self._video_prompt(context, duration, times)
        return p

    def _video_prompt(self, context: str, duration: float, times: list[float]) -> tuple[str, str]:
        """``(prompt, user turn)`` as lmms-eval's llava_vid builds them: with ``add_time_instruction`` its time
        instruction, listing ``times`` (seconds, one per frame the model is told of)."""
        qs = context
        if self.add_time_instruction:
            frame_time = ",".join(f"{t:.2f}s" for t in times)
            qs = (f"The video lasts for {duration:.2f} seconds, and {len(times)} frames are uniformly sampled from it. "
                  f"These frames are located at {frame_time}.Please answer the following questions related to "
                  f"this video.\n{qs}")
        if getattr(self._config, "mm_use_im_start_end", False):
            qs = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + qs
        else:
            qs = DEFAULT_IMAGE_TOKEN + "\n" + qs
        conv = self._new_conv()
        conv.append_message(conv.roles[0], qs)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt(), qs

    # -- the time instruction under compression
    def _prompt_reads_visuals(self) -> bool:
        """With ``add_time_instruction`` and a compression, the instruction lists the frames that keep a token."""
        return self.add_time_instruction and self.model.compression is not None

    def _prompts_from_visuals(self, batch: list[Prepared], records: list[SampleRecord]) -> None:
        """Each prompt's time instruction from its video's provenance: the frames with at least one token
        left (a token merged across frames counts for its anchor's frame), their count and times; when every
        frame keeps a token the prompt is lmms-eval's, character for character."""
        cursor = 0
        for p in batch:
            (record,) = records[cursor:cursor + len(p.visuals)]
            cursor += len(p.visuals)
            times = p.payload["times"]
            kept = record.kept_frames
            if kept is None or len(kept) == len(times):
                continue
            if kept[-1] >= len(times):
                raise ValueError(f"the compression kept frame {kept[-1]} of a video of {len(times)} sampled frames")
            p.frame_times = [float(times[i]) for i in kept]
            p.prompt, p.question = self._video_prompt(p.context, p.payload["duration"], p.frame_times)

    def _generation_kwargs(self, gen_kwargs: dict) -> dict:
        temperature = gen_kwargs.get("temperature", 0) or 0
        kwargs = {"do_sample": temperature > 0, "num_beams": gen_kwargs.get("num_beams", 1),
                  "max_new_tokens": gen_kwargs.get("max_new_tokens", 1024)}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=gen_kwargs.get("top_p"))
        return kwargs

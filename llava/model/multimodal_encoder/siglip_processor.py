"""SigLIP image/video-frame preprocessing, equal to LLaVA-NeXT's own ``SigLipImageProcessor``.

LLaVA-NeXT does not use transformers' ``SiglipImageProcessor``; it ships a small class of the same
spirit (``llava/model/multimodal_encoder/siglip_encoder.py``) that, for every image or video frame,

1. converts PIL images to RGB (RGBA/LA/P are composited on white, as transformers' ``convert_to_rgb``),
2. resizes with ``PIL.Image.resize((W, H), BICUBIC)`` to exactly ``size`` (no crop, aspect not kept),
3. rescales: ``(x.astype(float64) * 1/255).astype(float32)``,
4. normalises in float32: ``(x - mean) / std`` with mean = std = 0.5,
5. returns channels-first ``(3, H, W)`` arrays, stacked to ``pixel_values`` ``(B, 3, H, W)``.

This module reproduces that arithmetic step by step with numpy and PIL, so its output is bit-for-bit
the one LLaVA-NeXT (and lmms-eval's ``llava_onevision`` / ``llava_vid`` adapters) feed the tower.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

__all__ = ["SigLipImageProcessor"]

_BICUBIC = Image.Resampling.BICUBIC


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """transformers' ``convert_to_rgb``: RGB unchanged, transparency composited on white, rest converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_pil(frame: np.ndarray) -> Image.Image:
    """One uint8 frame ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C in {1, 3, 4} -> RGB PIL image."""
    if frame.dtype != np.uint8:
        raise TypeError(
            f"SigLipImageProcessor expects uint8 pixel arrays (0..255, as decord/PIL give them), "
            f"got dtype {frame.dtype}"
        )
    if frame.ndim == 3 and frame.shape[-1] not in (1, 3, 4) and frame.shape[0] in (1, 3, 4):
        frame = np.moveaxis(frame, 0, -1)  # channels-first input
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(frame)).convert("RGB")  # uint8 2-D -> mode "L"
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {tuple(frame.shape)}")
    pil = Image.fromarray(np.ascontiguousarray(frame))
    return _pil_to_rgb(pil)


class SigLipImageProcessor:
    """LLaVA-NeXT's SigLIP preprocessing (resize to a square, rescale, normalise; no crop).

    Attributes mirror LLaVA-NeXT's class, which other LLaVA code reads: ``image_mean``, ``image_std``
    (3-tuples), ``size`` ``(height, width)`` tuple, ``crop_size`` ``{"height", "width"}`` dict,
    ``resample`` (PIL bicubic), ``rescale_factor`` (1/255), ``data_format`` (``"channels_first"``).

    Args:
        image_mean, image_std: per-channel normalisation (default 0.5 each).
        size: output ``(height, width)``; an int means a square. Default ``(384, 384)``.
        crop_size: informational dict (LLaVA code reads ``crop_size["height"]``); defaults to ``size``.
        resample: PIL resampling filter (default bicubic).
        rescale_factor: multiplier applied to uint8 pixels (default 1/255).
        data_format: only ``"channels_first"`` is supported, as in LLaVA-NeXT.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_mean: Iterable[float] = (0.5, 0.5, 0.5),
        image_std: Iterable[float] = (0.5, 0.5, 0.5),
        size: int | tuple[int, int] | Mapping[str, int] = (384, 384),
        crop_size: Mapping[str, int] | None = None,
        resample: int = _BICUBIC,
        rescale_factor: float = 1 / 255,
        data_format: str = "channels_first",
    ) -> None:
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {self.image_mean} and {self.image_std}")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must be non-zero, got {self.image_std}")
        self.size = self._as_hw(size)
        if crop_size is None:
            crop_size = {"height": self.size[0], "width": self.size[1]}
        self.crop_size = {"height": int(crop_size["height"]), "width": int(crop_size["width"])}
        self.resample = Image.Resampling(resample)
        self.rescale_factor = float(rescale_factor)
        data_format = getattr(data_format, "value", data_format)  # accept transformers' ChannelDimension
        if data_format != "channels_first":
            raise ValueError(f"only data_format='channels_first' is supported, got {data_format!r}")
        self.data_format = "channels_first"

    @staticmethod
    def _as_hw(size: int | tuple[int, int] | Mapping[str, int]) -> tuple[int, int]:
        if isinstance(size, Mapping):
            if "height" in size and "width" in size:
                hw = (int(size["height"]), int(size["width"]))
            elif "shortest_edge" in size:
                hw = (int(size["shortest_edge"]),) * 2
            else:
                raise ValueError(f"size dict needs 'height'/'width' or 'shortest_edge', got {dict(size)}")
        elif isinstance(size, int):
            hw = (size, size)
        else:
            hw = tuple(int(v) for v in size)
            if len(hw) != 2:
                raise ValueError(f"size must be (height, width), got {size!r}")
        if min(hw) < 1:
            raise ValueError(f"size must be positive, got {hw}")
        return hw  # type: ignore[return-value]

    @classmethod
    def from_config(cls, vision_config: Any, **kwargs: Any) -> SigLipImageProcessor:
        """Processor whose square size is the tower's ``image_size``.

        Accepts a ``SiglipVisionConfig``-like object (attribute ``image_size``), a full ``SiglipConfig``
        (``.vision_config``) or a plain dict. Extra ``kwargs`` override the other constructor arguments.
        """
        cfg = vision_config
        if isinstance(cfg, Mapping):
            cfg = cfg.get("vision_config", cfg)
            image_size = cfg.get("image_size") if isinstance(cfg, Mapping) else getattr(cfg, "image_size", None)
        else:
            if getattr(cfg, "image_size", None) is None and getattr(cfg, "vision_config", None) is not None:
                cfg = cfg.vision_config
            image_size = cfg.get("image_size") if isinstance(cfg, Mapping) else getattr(cfg, "image_size", None)
        if image_size is None:
            raise ValueError(f"vision config has no image_size: {type(vision_config).__name__}")
        kwargs.setdefault("size", int(image_size))
        return cls(**kwargs)

    # ------------------------------------------------------------------ inputs
    def _to_pil_list(self, images: Any) -> list[Image.Image]:
        """Flatten the accepted inputs to a list of RGB PIL frames (video stacks become their frames)."""
        if isinstance(images, Image.Image):
            return [_pil_to_rgb(images)]
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if isinstance(images, np.ndarray):
            if images.ndim == 4:  # (T, H, W, C) video stack, one frame per output row
                return [_array_to_pil(frame) for frame in images]
            return [_array_to_pil(images)]
        if isinstance(images, (list, tuple)):
            out: list[Image.Image] = []
            for item in images:
                out.extend(self._to_pil_list(item))
            return out
        raise TypeError(
            "images must be a PIL image, a uint8 array (H, W, 3) / video stack (T, H, W, 3), or a list of those; "
            f"got {type(images).__name__}"
        )

    # ------------------------------------------------------------------ core
    def _process_one(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> float32 ``(3, H, W)`` exactly as LLaVA-NeXT computes it."""
        height, width = self.size
        resized = np.asarray(image.resize((width, height), resample=self.resample))  # (H, W, 3) uint8
        chw = resized.transpose(2, 0, 1)  # channels first, as LLaVA-NeXT's resize(data_format=FIRST)
        x = (chw.astype(np.float64) * self.rescale_factor).astype(np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        x = ((x.T - mean) / std).T  # transformers.normalize on channels-first data
        return np.ascontiguousarray(x, dtype=np.float32)

    def preprocess(self, images: Any, return_tensors: str | None = None) -> BatchFeature:
        """Preprocess images or video frames.

        Args:
            images: a PIL image; a uint8 array ``(H, W, 3)``; a uint8 video stack ``(T, H, W, 3)`` (as
                lmms-eval passes decord frames); or a list/tuple of any of these (stacks are flattened).
            return_tensors: ``"pt"`` for a torch tensor, ``"np"``/``None`` for a numpy array.

        Returns:
            ``BatchFeature`` with ``pixel_values`` of shape ``(B, 3, H, W)`` float32, ``B`` = number of
            frames/images, ``(H, W)`` = ``self.size``.
        """
        frames = self._to_pil_list(images)
        if not frames:
            raise ValueError("no images to preprocess (got an empty list or an empty video stack)")
        pixel_values = np.stack([self._process_one(frame) for frame in frames])
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
        tensor_type = "pt" if return_tensors == "pt" else None
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=tensor_type)

    def __call__(self, images: Any, return_tensors: str | None = None) -> BatchFeature:
        """Same as :meth:`preprocess`."""
        return self.preprocess(images, return_tensors=return_tensors)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, image_mean={self.image_mean}, image_std={self.image_std}, "
            f"resample={self.resample.name}, rescale_factor={self.rescale_factor:.6g})"
        )

"""Prompt tokenisation, image preprocessing and stopping helpers with LLaVA-NeXT's public API.

Everything here keeps LLaVA-NeXT's names, signatures and outputs, so its scripts and lmms-eval's
``llava_onevision`` / ``llava_vid`` adapters work unchanged::

    from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, process_images, tokenizer_image_token

    input_ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    image_tensor = process_images(images, image_processor, model.config)

Deliberate differences from LLaVA-NeXT (all where it fails or is wrong for batches):

- :class:`KeywordsStoppingCriteria` handles any batch size and returns one bool per row, which is what
  ``transformers`` 5 ``generate`` expects; LLaVA-NeXT asserts batch size 1 and returns a Python bool.
- :func:`process_images` accepts ``image_aspect_ratio=None`` (LLaVA-NeXT raises ``TypeError`` on the
  ``"anyres_max" in None`` test), and raises ``NotImplementedError`` for the image-only ``"highres"`` /
  ``"crop_split"`` modes that the video models never use.
- ``image_processor.size`` may be a dict with ``shortest_edge`` or ``height``/``width``, a tuple or an int.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.constants import IMAGE_TOKEN_INDEX

__all__ = [
    "KeywordsStoppingCriteria",
    "divide_to_patches",
    "expand2square",
    "get_anyres_image_grid_shape",
    "get_model_name_from_path",
    "process_anyres_image",
    "process_images",
    "resize_and_pad_image",
    "select_best_resolution",
    "tokenizer_image_token",
]

_GRID_PATCH_SIZES = (224, 336, 384, 448, 512)


def _processor_edge(processor: Any) -> int:
    """Side of the square the processor resizes to (LLaVA-NeXT's ``shortest_edge`` / ``size[0]``)."""
    size = processor.size
    if isinstance(size, dict):
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
        return int(min(size["height"], size["width"]))
    if isinstance(size, int):
        return size
    return int(min(size))


def _possible_resolutions(grid_pinpoints: Any, patch_size: int) -> list[list[int]]:
    """Candidate ``(width, height)`` resolutions from a list, its string form, or a ``"(1x1),...,(6x6)"`` range."""
    if isinstance(grid_pinpoints, str) and "x" in grid_pinpoints:
        if patch_size not in _GRID_PATCH_SIZES:
            raise ValueError(f"patch_size should be in {list(_GRID_PATCH_SIZES)}, got {patch_size}")
        matches = re.findall(r"\((\d+)x(\d+)\)", grid_pinpoints)
        range_start = tuple(map(int, matches[0]))
        range_end = tuple(map(int, matches[-1]))
        grid = [
            (i, j) for i in range(range_start[0], range_end[0] + 1) for j in range(range_start[1], range_end[1] + 1)
        ]
        return [[dim * patch_size for dim in pair] for pair in grid]
    if isinstance(grid_pinpoints, (list, tuple)):
        return [list(pair) for pair in grid_pinpoints]
    return ast.literal_eval(grid_pinpoints)


def select_best_resolution(original_size: tuple[int, int], possible_resolutions: Sequence) -> tuple[int, int]:
    """Pick the resolution that keeps the most of the image at the least padding (LLaVA-NeXT's rule).

    Args:
        original_size: ``(width, height)`` of the image.
        possible_resolutions: ``[(width, height), ...]`` candidates.

    Returns:
        The best ``(width, height)``: largest effective (downscaled, not upscaled) area, ties broken by
        the least wasted area.
    """
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")

    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution

        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)

    return best_fit


def resize_and_pad_image(image: Image.Image, target_resolution: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio so the image fits ``(width, height)``, then centre it on black."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution

    scale_w = target_width / original_width
    scale_h = target_height / original_height

    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)

    resized_image = image.resize((new_width, new_height))

    new_image = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    paste_x = (target_width - new_width) // 2
    paste_y = (target_height - new_height) // 2
    new_image.paste(resized_image, (paste_x, paste_y))
    return new_image


def divide_to_patches(image: Image.Image, patch_size: int) -> list[Image.Image]:
    """Cut an image into ``patch_size`` squares, row by row (partial edge patches are zero-filled by PIL)."""
    patches = []
    width, height = image.size
    for i in range(0, height, patch_size):
        for j in range(0, width, patch_size):
            box = (j, i, j + patch_size, i + patch_size)
            patches.append(image.crop(box))
    return patches


def get_anyres_image_grid_shape(image_size: tuple[int, int], grid_pinpoints: Any, patch_size: int) -> tuple[int, int]:
    """Shape ``(width, height)`` in patches of the anyres grid chosen for an image of ``(width, height)``.

    ``grid_pinpoints`` is a list of ``[width, height]`` pairs, its string form, or a ``"(1x1),...,(6x6)"``
    range in units of ``patch_size``.
    """
    possible_resolutions = _possible_resolutions(grid_pinpoints, patch_size)
    width, height = select_best_resolution(image_size, possible_resolutions)
    return width // patch_size, height // patch_size


def process_anyres_image(image: Image.Image, processor: Any, grid_pinpoints: Any) -> torch.Tensor:
    """LLaVA-NeXT's anyres preprocessing: a resized overview plus the patches of the best-fitting grid.

    Returns:
        ``(1 + num_patches, C, H, W)``: the whole image squashed to the processor's size, then the
        patches of the image resized-and-padded to :func:`select_best_resolution`'s choice.
    """
    possible_resolutions = _possible_resolutions(grid_pinpoints, _processor_edge(processor))
    best_resolution = select_best_resolution(image.size, possible_resolutions)
    image_padded = resize_and_pad_image(image, best_resolution)

    patches = divide_to_patches(image_padded, processor.crop_size["height"])

    # As in LLaVA-NeXT, the overview is resized (aspect not kept) rather than padded.
    shortest_edge = _processor_edge(processor)
    image_original_resize = image.resize((shortest_edge, shortest_edge))

    image_patches = [image_original_resize] + patches
    image_patches = [processor.preprocess(patch, return_tensors="pt")["pixel_values"][0] for patch in image_patches]
    return torch.stack(image_patches, dim=0)


def expand2square(pil_img: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    """Pad an image to a square of its longer side, centred, with ``background_color``."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


def _cfg_get(model_cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(model_cfg, dict):
        return model_cfg.get(key, default)
    return getattr(model_cfg, key, default)


def process_images(images: Sequence[Image.Image], image_processor: Any, model_cfg: Any) -> torch.Tensor | list:
    """Preprocess PIL images according to ``model_cfg.image_aspect_ratio``, as LLaVA-NeXT does.

    - ``"pad"``: pad to a square with the processor's mean colour, then preprocess.
    - ``"anyres"`` / ``"anyres_max_N"``: :func:`process_anyres_image` with ``model_cfg.image_grid_pinpoints``
      (the ``max_N`` cap is applied later, on features, by the model).
    - anything else (``None`` included): ``image_processor.preprocess(images)`` in one batch.

    Args:
        images: PIL images.
        image_processor: Object with ``preprocess(images, return_tensors="pt") -> {"pixel_values": tensor}``,
            ``image_mean``, ``crop_size`` (``{"height", "width"}``) and ``size``.
        model_cfg: Model config (attribute or dict access).

    Returns:
        One stacked tensor when every processed image has the same shape, else a list of tensors
        (anyres images with different grids).
    """
    image_aspect_ratio = _cfg_get(model_cfg, "image_aspect_ratio", None)
    new_images = []
    if image_aspect_ratio in ("highres", "crop_split"):
        raise NotImplementedError(
            f"image_aspect_ratio={image_aspect_ratio!r} is not supported (video models use anyres)"
        )
    if isinstance(image_aspect_ratio, str) and (image_aspect_ratio == "anyres" or "anyres_max" in image_aspect_ratio):
        grid_pinpoints = _cfg_get(model_cfg, "image_grid_pinpoints", None)
        if grid_pinpoints is None:
            raise ValueError(f"image_aspect_ratio={image_aspect_ratio!r} needs model_cfg.image_grid_pinpoints")
        for image in images:
            new_images.append(process_anyres_image(image, image_processor, grid_pinpoints))
    elif image_aspect_ratio == "pad":
        background = tuple(int(x * 255) for x in image_processor.image_mean)
        for image in images:
            image = expand2square(image, background)
            new_images.append(image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0])
    else:
        return image_processor.preprocess(images, return_tensors="pt")["pixel_values"]
    if new_images and all(x.shape == new_images[0].shape for x in new_images):
        new_images = torch.stack(new_images, dim=0)
    return new_images


def tokenizer_image_token(
    prompt: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
) -> list[int] | torch.Tensor:
    """Tokenise ``prompt`` with ``image_token_index`` in place of every ``<image>``.

    The prompt is split on ``<image>``, each piece tokenised on its own, and the pieces joined with
    ``image_token_index``. A BOS the tokenizer prepends is kept once, at the start (Qwen2 adds none).

    Args:
        prompt: Text with zero or more ``<image>`` markers.
        tokenizer: A ``transformers`` tokenizer.
        image_token_index: Placeholder id (default ``IMAGE_TOKEN_INDEX``, -200).
        return_tensors: ``None`` for a list of ints, ``"pt"`` for a 1-D ``torch.long`` tensor.

    Raises:
        ValueError: ``return_tensors`` is neither ``None`` nor ``"pt"``.
    """
    if return_tensors is not None and return_tensors != "pt":
        raise ValueError(f"Unsupported tensor type: {return_tensors}")
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(chunks: list, sep: list) -> list:
        return [ele for sublist in zip(chunks, [sep] * len(chunks)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if (
        len(prompt_chunks) > 0
        and len(prompt_chunks[0]) > 0
        and tokenizer.bos_token_id is not None
        and prompt_chunks[0][0] == tokenizer.bos_token_id
    ):
        offset = 1
        input_ids.append(prompt_chunks[0][0])

    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])

    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path: str) -> str:
    """Model name from a checkpoint path: its last component, or ``parent_checkpoint-N`` for trainer checkpoints."""
    model_path = model_path.strip("/")
    model_paths = model_path.split("/")
    if model_paths[-1].startswith("checkpoint-"):
        return model_paths[-2] + "_" + model_paths[-1]
    return model_paths[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop each sequence once any keyword appears in the text it has generated.

    Works for any batch size: ``__call__`` returns a ``torch.bool`` tensor of shape ``(batch,)``, one flag
    per row, which is the contract of ``transformers`` 5 ``StoppingCriteria`` (``generate`` ORs it into
    its per-row "finished" mask; finished rows are then filled with ``pad_token_id`` while the others go
    on, but only when generate also has an EOS criterion, i.e. ``eos_token_id`` is set). Rows not caught
    by the token-id fast path have their whole generated text decoded on each call.

    Args:
        keywords: Stop strings, e.g. ``["<|im_end|>"]`` (a single string is accepted too). Empty strings
            are ignored (they would match immediately).
        tokenizer: Tokenizer used to encode the keywords and decode the generated tokens.
        input_ids: The prompt ids given to ``generate`` (``(batch, prompt_len)`` or 1-D); their length
            marks where generated tokens start. When ``generate`` runs from ``inputs_embeds`` only (as
            LLaVA's ``generate`` does), its output holds only new tokens: outputs no longer than the prompt
            are then read in full, longer ones from ``start_len`` on (set ``start_len = 0`` to read all).
    """

    def __init__(self, keywords: Sequence[str] | str, tokenizer: Any, input_ids: torch.Tensor):
        if isinstance(keywords, str):
            keywords = [keywords]
        self.keywords = [keyword for keyword in keywords if keyword]
        self.keyword_ids = []
        for keyword in self.keywords:
            cur_keyword_ids = tokenizer(keyword).input_ids
            if len(cur_keyword_ids) > 1 and cur_keyword_ids[0] == tokenizer.bos_token_id:
                cur_keyword_ids = cur_keyword_ids[1:]
            self.keyword_ids.append(torch.tensor(cur_keyword_ids, dtype=torch.long))
        self.tokenizer = tokenizer
        self.start_len = int(input_ids.shape[-1])

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs
    ) -> torch.BoolTensor:
        """Return a ``(batch,)`` bool tensor: ``True`` for rows whose generated text contains a keyword."""
        output_ids = input_ids
        is_done = torch.zeros(output_ids.shape[0], dtype=torch.bool, device=output_ids.device)
        gen_start = self.start_len if output_ids.shape[1] > self.start_len else 0
        generated = output_ids[:, gen_start:]
        if generated.shape[1] == 0 or not self.keywords:
            return is_done

        # Fast path: the keyword's ids are the last tokens of the row.
        for keyword_id in self.keyword_ids:
            k = keyword_id.numel()
            if 0 < k <= generated.shape[1]:
                is_done |= (generated[:, -k:] == keyword_id.to(generated.device)).all(dim=1)

        # Text check for the other rows: catches keywords tokenised differently inside longer text.
        pending = (~is_done).nonzero().flatten().tolist()
        if pending:
            texts = self.tokenizer.batch_decode(generated[pending].tolist(), skip_special_tokens=False)
            for row, text in zip(pending, texts):
                if any(keyword in text for keyword in self.keywords):
                    is_done[row] = True
        return is_done

"""A model family written outside the package, as a user would add one: a tiny-checkpoint writer, an
lmms-eval adapter and one :class:`llava.families.FamilySpec`, registered through the entry point group
``aot.families`` (``toy_llava = toy_family:SPEC``), with no edit to the package.

It reuses the LLaVA-NeXT pieces: its checkpoints are the original layout under their own
``model_type`` (``toy_llava``), shaped as LLaVA-Video's (a newline after every row of the 2 x 2
average-pooled grid), answered by the LLaVA-NeXT runner and served to lmms-eval as ``aot_toy_llava``,
a LLaVA-OneVision adapter that keeps the checkpoint's pooling.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from llava.eval.adapters.llava_onevision import AOTLlavaOneVision
from llava.families import PluginSpec, TinySpec
from llava.families.llava_next import LLAVA_ONEVISION

NAME = "toy_llava"
MODEL_TYPE = "toy_llava"
MODEL_ID = "aot_toy_llava"


def write_tiny_toy(path: Path) -> Path:
    """The tiny LLaVA checkpoint with grid newlines and average pooling, as ``model_type: toy_llava``."""
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(path, newline_position="grid", pool_mode="average")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"model_type": MODEL_TYPE}, indent=2))
    return path


class AOTToyLlava(AOTLlavaOneVision):
    """``aot_toy_llava``: LLaVA-OneVision's adapter with the checkpoint's own pooling mode."""

    MODEL_ID = MODEL_ID

    def __init__(self, pretrained: str = "", compression: str = "none", device: str | None = None,
                 batch_size: int | str = 1, max_batch_size: int | None = None, device_map: str | None = None,
                 max_frames_num: int = 8, torch_dtype: str = "float32") -> None:
        config = json.loads((Path(pretrained) / "config.json").read_text())
        super().__init__(pretrained=pretrained, compression=compression, device=device, batch_size=batch_size,
                         max_batch_size=max_batch_size, device_map=device_map, max_frames_num=max_frames_num,
                         torch_dtype=torch_dtype, mm_spatial_pool_mode=config["mm_spatial_pool_mode"],
                         model_name="llava_qwen")


SPEC = dataclasses.replace(
    LLAVA_ONEVISION, name=NAME, title="Toy-LLaVA", model_types=(MODEL_TYPE,),
    plugin=PluginSpec(MODEL_ID, f"{__name__}.{AOTToyLlava.__name__}", builtin="llava_onevision"),
    tiny=TinySpec(write_tiny_toy, "tiny-toy-llava", (("max_frames_num", 8), ("torch_dtype", "float32"))),
)

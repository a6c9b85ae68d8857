"""The Qwen-VL families: Qwen2.5-VL and Qwen3-VL, transformers' own models in the Hugging Face layout.

Each is compressed by its seam (:class:`llava.model.qwen_vl.qwen2_5_vl.Qwen25VLCompression`,
:class:`llava.model.qwen_vl.qwen3_vl.Qwen3VLCompression`) around transformers' model; ``aot infer``
answers with the checkpoint's processor and chat template (:func:`answer_qwen`). Qwen3-VL's
timestamps come from the clip's frame indices and frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava.families.infer import InferOptions, checkpoint_model_type, infer_stats, timed_generate
from llava.families.spec import FamilySpec, PluginSpec, TinySpec

if TYPE_CHECKING:  # the record's module loads the model stack
    from llava.model.record import SampleRecord

__all__ = ["QWEN2_5_VL", "QWEN3_VL", "LoadedQwen", "answer_qwen", "answer_qwen_loaded", "load_qwen"]


def _load_qwen2_5_vl(model_path: str) -> tuple[Any, Any]:
    import transformers

    from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression

    return transformers.Qwen2_5_VLForConditionalGeneration, Qwen25VLCompression


def _load_qwen3_vl(model_path: str) -> tuple[Any, Any]:
    import transformers

    from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression

    moe = checkpoint_model_type(model_path) == "qwen3_vl_moe"
    return (transformers.Qwen3VLMoeForConditionalGeneration if moe else transformers.Qwen3VLForConditionalGeneration,
            Qwen3VLCompression)


def _qwen3_video_kwargs(clip: Any) -> dict[str, Any]:
    return {"video_metadata": [{"fps": clip.fps, "total_num_frames": clip.total_frames,
                                "frames_indices": list(clip.indices)}], "do_sample_frames": False}


@dataclass
class LoadedQwen:
    """A loaded Qwen-VL checkpoint (:func:`load_qwen`): the model, its processor and its seam."""

    model: Any
    processor: Any
    seam: Any


def load_qwen(model_path: str, options: InferOptions, *, classes: Any) -> LoadedQwen:
    """Load a Qwen-VL checkpoint once (``classes(model_path)`` gives the model class and its seam class)."""
    from transformers import AutoProcessor

    model_cls, seam_cls = classes(model_path)
    kwargs: dict[str, Any] = {"torch_dtype": options.dtype, "device_map": options.device_map}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    model = model_cls.from_pretrained(model_path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(model_path, **({"max_pixels": options.max_pixels}
                                                             if options.max_pixels else {}))
    return LoadedQwen(model, processor, seam_cls(model))


def answer_qwen_loaded(loaded: LoadedQwen, clip: Any, question: str, options: InferOptions, *,
                       video_kwargs: Any = None) -> tuple[str, SampleRecord]:
    """One question about one decoded clip through a loaded Qwen-VL model, its processor and chat template,
    compressed by the seam under ``options.compression``. ``video_kwargs(clip)`` adds processor arguments.
    Returns (answer, SampleRecord)."""
    from transformers import StoppingCriteriaList

    model, processor, seam = loaded.model, loaded.processor, loaded.seam
    seam.set_compression(options.compression if options.compressed else None)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    # the reference per-frame pixel cap (qwen-vl-utils' sizing): token counts as the reference processing's
    extra = {"cap_pixels_per_frame": True, **(video_kwargs(clip) if video_kwargs else {})}
    inputs = processor(text=[text], videos=[clip.frames], return_tensors="pt", **extra).to(model.device)

    def generate(clock: Any) -> Any:
        return seam.generate(**inputs, do_sample=False, max_new_tokens=options.max_new_tokens,
                             stopping_criteria=StoppingCriteriaList([clock]))

    new, start, first, end = timed_generate(model, generate)
    answer = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
    return answer, infer_stats(seam.last_visual_stats[0], model, options.name, new.shape[1], start, first, end,
                               frames_read=clip.frames_read)


def answer_qwen(model_path: str, clip: Any, question: str, options: InferOptions, *, classes: Any,
                video_kwargs: Any = None) -> tuple[str, SampleRecord]:
    """``aot infer`` for a Qwen-VL family: :func:`load_qwen`, then :func:`answer_qwen_loaded`."""
    return answer_qwen_loaded(load_qwen(model_path, options, classes=classes), clip, question, options,
                              video_kwargs=video_kwargs)


def answer_qwen2_5_vl(model_path: str, clip: Any, question: str, options: InferOptions) -> tuple[str, SampleRecord]:
    return answer_qwen(model_path, clip, question, options, classes=_load_qwen2_5_vl)


def answer_qwen3_vl(model_path: str, clip: Any, question: str, options: InferOptions) -> tuple[str, SampleRecord]:
    return answer_qwen(model_path, clip, question, options, classes=_load_qwen3_vl, video_kwargs=_qwen3_video_kwargs)


def load_qwen2_5_vl(model_path: str, options: InferOptions) -> LoadedQwen:
    return load_qwen(model_path, options, classes=_load_qwen2_5_vl)


def load_qwen3_vl(model_path: str, options: InferOptions) -> LoadedQwen:
    return load_qwen(model_path, options, classes=_load_qwen3_vl)


def answer_qwen2_5_vl_loaded(loaded: LoadedQwen, clip: Any, question: str,
                             options: InferOptions) -> tuple[str, SampleRecord]:
    return answer_qwen_loaded(loaded, clip, question, options)


def answer_qwen3_vl_loaded(loaded: LoadedQwen, clip: Any, question: str,
                           options: InferOptions) -> tuple[str, SampleRecord]:
    return answer_qwen_loaded(loaded, clip, question, options, video_kwargs=_qwen3_video_kwargs)


def qwen_score_layers(config: Any) -> tuple[int, int]:
    """:func:`llava.model.qwen_vl.scores.default_score_layers` of the checkpoint's vision config."""
    from llava.model.qwen_vl.scores import default_score_layers

    return default_score_layers(config.vision_config)


def write_tiny_qwen2_5_vl(path: Path) -> Path:
    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl as write

    return write(path)


def write_tiny_qwen3_vl(path: Path) -> Path:
    from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl as write

    return write(path)


QWEN2_5_VL = FamilySpec(
    name="qwen2_5_vl", title="Qwen2.5-VL", model_types=("qwen2_5_vl",), layout="hf", answer=answer_qwen2_5_vl,
    load=load_qwen2_5_vl, answer_loaded=answer_qwen2_5_vl_loaded,
    seam="llava.model.qwen_vl.qwen2_5_vl.Qwen25VLCompression",
    plugin=PluginSpec("aot_qwen2_5_vl", "llava.eval.adapters.qwen2_5_vl.AOTQwen25VL", builtin="qwen2_5_vl",
                      chat=True, frames_arg="max_num_frames"),
    # 16 frames of the smoke videos at 168 x 168 px: 8 temporal tokens of 6 x 6 merged tokens
    tiny=TinySpec(write_tiny_qwen2_5_vl, "tiny-qwen2.5-vl",
                  (("max_num_frames", 16), ("min_pixels", 28224), ("max_pixels", 28224), ("torch_dtype", "float32"))),
    score_layers=qwen_score_layers,
)

QWEN3_VL = FamilySpec(
    name="qwen3_vl", title="Qwen3-VL", model_types=("qwen3_vl", "qwen3_vl_moe"), layout="hf", answer=answer_qwen3_vl,
    load=load_qwen3_vl, answer_loaded=answer_qwen3_vl_loaded,
    seam="llava.model.qwen_vl.qwen3_vl.Qwen3VLCompression",
    plugin=PluginSpec("aot_qwen3_vl", "llava.eval.adapters.qwen3_vl.AOTQwen3VL", builtin="qwen3_vl",
                      chat=True, frames_arg="max_num_frames"),
    # 16 frames at 192 x 192 px: 8 temporal tokens of 6 x 6 merged tokens (32 px each)
    tiny=TinySpec(write_tiny_qwen3_vl, "tiny-qwen3-vl",
                  (("max_num_frames", 16), ("min_pixels", 36864), ("max_pixels", 36864), ("torch_dtype", "float32"))),
    score_layers=qwen_score_layers,
)

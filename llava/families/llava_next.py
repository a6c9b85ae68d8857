"""The LLaVA-NeXT families: LLaVA-OneVision and LLaVA-Video, checkpoints in the original LLaVA-NeXT layout.

Both are loaded by :func:`llava.model.builder.load_pretrained_model` and compressed inside the model
(:mod:`llava.model.llava_arch`, where the visual tokens meet :func:`visionzip.compress_video`); they
share the layout, the loader and the ``aot infer`` runner (:func:`answer_llava`) and differ in their
lmms-eval plugin (frame sampling, prompts, config overrides of ``llava_onevision`` / ``llava_vid``).
A checkpoint in this layout runs as LLaVA-OneVision unless ``--family llava_video`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava.families.infer import InferOptions, infer_stats, timed_generate
from llava.families.spec import FamilySpec, PluginSpec, TinySpec

if TYPE_CHECKING:  # the record's module loads the model stack
    from llava.model.record import SampleRecord

__all__ = ["LLAVA_ONEVISION", "LLAVA_VIDEO", "LoadedLlava", "answer_llava", "answer_llava_loaded", "load_llava",
           "load_llava_model", "write_tiny_llava"]

#: ``model_type`` of the original layout's config.json: ``llava`` as released, ``llava_qwen`` as this
#: package's :class:`~llava.model.language_model.llava_qwen.LlavaQwenConfig` saves it (training outputs)
LLAVA_MODEL_TYPES = ("llava", "llava_qwen")
#: the plugin's model arguments that go with the tiny checkpoint
TINY_MODEL_ARGS = (("max_frames_num", 32), ("torch_dtype", "float32"), ("conv_template", "qwen_1_5"),
                   ("model_name", "llava_qwen"))


def load_llava(model: str, options: InferOptions):
    """(tokenizer, model, image processor, context length) of an original-layout checkpoint, with
    ``options.compression`` set in its config in place of the checkpoint's own ``aot_compression``
    (``none``: full tokens, even on a checkpoint saved with a compression)."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    overwrite = {"aot_compression": options.compression if options.compressed else None}
    return load_pretrained_model(model, None, get_model_name_from_path(model), device_map=options.device_map,
                                 torch_dtype=options.dtype, attn_implementation=options.attn_implementation,
                                 overwrite_config=overwrite)


def answer_loaded(tokenizer: Any, model: Any, image_processor: Any, clip: Any, question: str, *,
                  conv_template: str = "qwen_1_5", max_new_tokens: int = 16,
                  compression: str = "none") -> tuple[str, SampleRecord]:
    """One question about one decoded clip through a loaded LLaVA-NeXT model and LLaVA-NeXT's
    conversation template. Returns (answer, SampleRecord)."""
    from transformers import StoppingCriteriaList

    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import get_conv_template
    from llava.mm_utils import KeywordsStoppingCriteria, tokenizer_image_token

    pixels = image_processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
    pixels = pixels.to(device=model.device, dtype=model.dtype)
    conv = get_conv_template(conv_template).copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    input_ids = input_ids.to(model.device)
    stop_words = [conv.sep if conv.sep_style.name != "TWO" else conv.sep2]

    def generate(clock: Any) -> Any:
        criteria = StoppingCriteriaList([clock, KeywordsStoppingCriteria(stop_words, tokenizer, input_ids)])
        return model.generate(input_ids, images=[pixels], modalities=["video"], do_sample=False,
                              max_new_tokens=max_new_tokens, stopping_criteria=criteria,
                              pad_token_id=tokenizer.pad_token_id)

    out, start, first, end = timed_generate(model, generate)
    answer = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    return answer, infer_stats(model.last_visual_stats[0], model, compression, out.shape[1], start, first, end,
                               frames_read=clip.frames_read)


def answer_llava(model_path: str, clip: Any, question: str, options: InferOptions) -> tuple[str, SampleRecord]:
    """``aot infer`` for the LLaVA-NeXT families: load, then :func:`answer_loaded`."""
    tokenizer, model, processor, _ = load_llava(model_path, options)
    return answer_loaded(tokenizer, model, processor, clip, question, conv_template=options.conv_template,
                         max_new_tokens=options.max_new_tokens, compression=options.name)


@dataclass
class LoadedLlava:
    """A loaded LLaVA-NeXT checkpoint (:func:`load_llava_model`): what :func:`answer_llava_loaded` runs."""

    tokenizer: Any
    model: Any
    processor: Any


def load_llava_model(model_path: str, options: InferOptions) -> LoadedLlava:
    """Load once, for :func:`answer_llava_loaded` (``FamilySpec.load``)."""
    tokenizer, model, processor, _ = load_llava(model_path, options)
    return LoadedLlava(tokenizer, model.eval(), processor)


def answer_llava_loaded(loaded: LoadedLlava, clip: Any, question: str,
                        options: InferOptions) -> tuple[str, SampleRecord]:
    """:func:`answer_llava` on a loaded checkpoint, with ``options.compression`` set on the model first."""
    loaded.model.set_compression(options.compression if options.compressed else None)
    return answer_loaded(loaded.tokenizer, loaded.model, loaded.processor, clip, question,
                         conv_template=options.conv_template, max_new_tokens=options.max_new_tokens,
                         compression=options.name)


def write_tiny_llava(path: Path) -> Path:
    """The tiny random-weight LLaVA-OneVision checkpoint (:mod:`llava.fixtures.tiny_checkpoint`)."""
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(path)


def llava_score_layers(config: Any) -> tuple[int, int]:
    """SigLIP's layers AOT reads by default: the AOT config's own ``shallow_layer`` / ``deep_layer``."""
    import visionzip

    default = visionzip.AOTConfig()
    return default.shallow_layer, default.deep_layer


LLAVA_ONEVISION = FamilySpec(
    name="llava_onevision", title="LLaVA-OneVision", model_types=LLAVA_MODEL_TYPES, layout="llava_next",
    answer=answer_llava, load=load_llava_model, answer_loaded=answer_llava_loaded,
    seam="llava.model.builder.load_pretrained_model",
    plugin=PluginSpec("aot_llava_onevision", "llava.eval.adapters.llava_onevision.AOTLlavaOneVision",
                      builtin="llava_onevision"),
    tiny=TinySpec(write_tiny_llava, "tiny-llava-ov", TINY_MODEL_ARGS), score_layers=llava_score_layers,
)

LLAVA_VIDEO = FamilySpec(
    name="llava_video", title="LLaVA-Video", model_types=LLAVA_MODEL_TYPES, layout="llava_next",
    answer=answer_llava, load=load_llava_model, answer_loaded=answer_llava_loaded,
    seam="llava.model.builder.load_pretrained_model",
    plugin=PluginSpec("aot_llava_vid", "llava.eval.adapters.llava_video.AOTLlavaVid", builtin="llava_vid"),
    tiny=TinySpec(write_tiny_llava, "tiny-llava-ov", TINY_MODEL_ARGS), score_layers=llava_score_layers,
    auto_detect=False,  # same layout as LLaVA-OneVision, which a plain `aot infer` picks
)

"""``load_pretrained_model``: LLaVA-NeXT's loader, for checkpoints in the original layout."""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from llava.model.checkpoint import CheckpointLayoutError, resolve_model_path
from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM
from llava.model.lora_loading import is_lora_folder, lora_base, merge_lora_folder, require_peft
from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor

__all__ = [
    "CheckpointLayoutError",
    "EXTRA_KEYWORDS",
    "LOAD_KEYWORDS",
    "check_checkpoint_keys",
    "load_llava_config",
    "load_lora",
    "load_pretrained_model",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "fp32": torch.float32}


def load_llava_config(
    model_path: str | Path, *, overwrite_config: dict | None = None, config_file: str | Path | None = None
) -> LlavaQwenConfig:
    """Read ``config.json`` of an original-layout checkpoint (or ``config_file``, a JSON of the same
    form) as a Qwen2 config plus the ``mm_*`` keys (transformers' ``AutoConfig`` would read
    ``model_type: "llava"`` as its own, wrong, LlavaConfig)."""
    if config_file is not None:
        cfg_file, path = Path(config_file), Path(config_file).parent
        if not cfg_file.is_file():
            raise CheckpointLayoutError(
                f"customized_config {str(config_file)!r} does not exist; expected a JSON config file")
    else:
        path = resolve_model_path(model_path)
        cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointLayoutError(f"{path}: no config.json; expected a LLaVA-NeXT checkpoint folder")
    data = json.loads(cfg_file.read_text())
    if "text_config" in data and "mm_vision_tower" not in data:
        raise CheckpointLayoutError(
            f"{path}: config.json is in the llava-hf conversion layout (model_type {data.get('model_type')!r} with "
            "text_config); expected the original LLaVA-NeXT layout (model_type 'llava' with mm_* keys), e.g. "
            "lmms-lab/llava-onevision-qwen2-7b-ov"
        )
    missing = [k for k in ("mm_vision_tower", "mm_projector_type", "hidden_size", "vocab_size") if k not in data]
    if missing:
        raise CheckpointLayoutError(
            f"{path}: config.json lacks {missing}; expected a LLaVA-NeXT (Qwen2) multimodal config")
    data.pop("model_type", None)
    cfg = LlavaQwenConfig(**data)
    for key, value in (overwrite_config or {}).items():
        setattr(cfg, key, value)
    return cfg


def _weight_keys(path: Path) -> list[str]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text())["weight_map"])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointLayoutError(
            f"{path}: no *.safetensors weights; expected model.safetensors or shards with an index")
    keys: list[str] = []
    for f in files:
        with safe_open(f, "pt") as fh:
            keys += list(fh.keys())
    return keys


def check_checkpoint_keys(model: torch.nn.Module, path: Path) -> None:
    """Compare the checkpoint's tensor names with the model's; fail listing every difference."""
    on_disk = set(_weight_keys(path))
    expected = {k for k in model.state_dict() if not k.endswith("inv_freq")}
    if getattr(model.config, "tie_word_embeddings", False):
        expected.discard("lm_head.weight")
        on_disk.discard("lm_head.weight")
    missing, unexpected = sorted(expected - on_disk), sorted(on_disk - expected)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:20]) + (f" ... ({len(keys)} in all)" if len(keys) > 20 else "")

        raise CheckpointLayoutError(
            f"{path}: checkpoint keys do not match LlavaQwenForCausalLM; missing: [{show(missing)}]; "
            f"unexpected: [{show(unexpected)}]; expected LLaVA-NeXT's original key names "
            "(model.layers.*, model.mm_projector.*, model.image_newline, "
            "model.vision_tower.vision_tower.vision_model.*)"
        )


def _attn_implementation(requested: str | None) -> str:
    if requested in (None, "sdpa", "eager"):
        return requested or "sdpa"
    if requested == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401

            if torch.cuda.is_available():
                return requested
        except ImportError:
            pass
        warnings.warn("flash_attention_2 is not available here (needs flash-attn and a GPU); using sdpa", stacklevel=3)
        return "sdpa"
    raise ValueError(f"attn_implementation={requested!r} is not valid; expected 'flash_attention_2', 'sdpa' or 'eager'")


#: keywords of ``load_pretrained_model`` besides its named parameters, taken from the LLaVA releases'
#: loaders (lmms-eval passes ``use_flash_attention_2``): keyword -> what it does here
EXTRA_KEYWORDS = {
    "use_flash_attention_2": "True (or 'true') means attn_implementation='flash_attention_2'",
    "use_flash_attn": "LLaVA-1.5's spelling of use_flash_attention_2",
    "device": "LLaVA-1.5's keyword: the whole model on that device (device_map={'': device})",
    "use_fast": "the tokenizer's use_fast (default True)",
}


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | None,
    model_name: str,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: Any = "auto",
    torch_dtype: str | torch.dtype = "float16",
    attn_implementation: str | None = "flash_attention_2",
    customized_config: Any = None,
    overwrite_config: dict | None = None,
    multimodal: bool = True,
    **kwargs: Any,
):
    """LLaVA-NeXT's loader. Returns ``(tokenizer, model, image_processor, context_len)``.

    The parameters are LLaVA-NeXT's. ``model_name`` is accepted and not read: the checkpoint's
    ``config.json`` decides the model (``LlavaQwenForCausalLM``). ``load_8bit`` / ``load_4bit`` must
    stay False (a ValueError otherwise). ``overwrite_config`` sets config attributes before the model
    is built; its key ``aot_compression`` (preset name, YAML path or dict of AOTConfig fields)
    switches AOT on. ``device_map="auto"`` places the model on the GPU when there is one, else on the
    CPU. ``multimodal`` is accepted for lmms-eval: the vision tower is loaded either way. The other
    keywords accepted are those of :data:`EXTRA_KEYWORDS`; any other raises a ValueError naming it and
    listing the valid ones (:data:`LOAD_KEYWORDS`).

    A LoRA output folder in ``model_path`` (``adapter_config.json``, as ``llava.train.lora.save_lora``
    writes it) is loaded over ``model_base``, or over the base the folder records when ``model_base``
    is None, and merged (:func:`load_lora`; needs peft: ``pip install -e ".[train]"``).
    """
    unknown = sorted(set(kwargs) - set(EXTRA_KEYWORDS))
    if unknown:
        raise ValueError(f"load_pretrained_model got unknown keyword(s) {unknown}; expected some of {LOAD_KEYWORDS}")
    if load_8bit or load_4bit:
        raise ValueError("load_8bit / load_4bit are not supported; expected full-precision loading (torch_dtype)")
    path = resolve_model_path(model_path)
    if is_lora_folder(path):  # a LoRA output folder: base + adapter, merged (needs peft: a clear ImportError otherwise)
        return load_lora(
            path, model_base, model_name=model_name, device_map=device_map, torch_dtype=torch_dtype,
            attn_implementation=attn_implementation, customized_config=customized_config,
            overwrite_config=overwrite_config, multimodal=multimodal, **kwargs,
        )
    if model_base is not None:
        raise ValueError(
            f"model_base={model_base!r} with model_path={str(model_path)!r}, which is not a LoRA folder "
            "(no adapter_config.json): model_base is only for LoRA output folders (adapter_config.json, "
            "non_lora_trainables.bin); LLaVA-NeXT's projector-only mode (mm_projector.bin over a base) is not "
            "supported; expected model_base=None for a full checkpoint, or a LoRA folder in model_path"
        )
    if isinstance(customized_config, (str, Path)):  # lmms-eval passes a path to a JSON config
        cfg = load_llava_config(path, overwrite_config=overwrite_config, config_file=customized_config)
    elif customized_config is not None:
        cfg = (customized_config if isinstance(customized_config, LlavaQwenConfig)
               else LlavaQwenConfig(**customized_config.to_dict()))
        for key, value in (overwrite_config or {}).items():
            setattr(cfg, key, value)
    else:
        cfg = load_llava_config(path, overwrite_config=overwrite_config)
    dtype = _DTYPES.get(torch_dtype, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
    if isinstance(dtype, str) and dtype != "auto":
        raise ValueError(f"torch_dtype={torch_dtype!r} is not valid; expected one of {sorted(_DTYPES)} or 'auto'")
    for key in ("use_flash_attention_2", "use_flash_attn"):
        if kwargs.get(key, False) in (True, "True", "true"):
            attn_implementation = "flash_attention_2"
    attn = _attn_implementation(attn_implementation)
    if kwargs.get("device") is not None:
        device_map = {"": kwargs["device"]}
    if device_map == "auto" and not torch.cuda.is_available():
        device_map = None
    load_kwargs: dict[str, Any] = {"config": cfg, "dtype": dtype, "attn_implementation": attn}
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    model, info = LlavaQwenForCausalLM.from_pretrained(str(path), output_loading_info=True, **load_kwargs)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        check_checkpoint_keys(model, path)  # names the keys; shape mismatches fall through to here
        raise CheckpointLayoutError(f"{path}: checkpoint does not load cleanly: {problems}")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=kwargs.get("use_fast", True))
    tower = model.get_vision_tower()
    image_processor = SigLipImageProcessor.from_config(tower.config)
    tower.image_processor = image_processor
    context_len = getattr(cfg, "tokenizer_model_max_length", None) or getattr(cfg, "max_sequence_length", None) or 2048
    if not multimodal:
        logger.info("multimodal=False: the vision tower is loaded all the same (LLaVA checkpoints carry it)")
    return tokenizer, model, image_processor, context_len


#: every keyword ``load_pretrained_model`` accepts
LOAD_KEYWORDS = sorted(
    [p for p in inspect.signature(load_pretrained_model).parameters if p != "kwargs"] + list(EXTRA_KEYWORDS))


def load_lora(model_path: str | Path, model_base: str | None = None, **load_kwargs: Any):
    """LLaVA-NeXT's LoRA loading. Returns ``(tokenizer, merged_model, image_processor, context_len)``.

    The base (:func:`llava.model.lora_loading.lora_base`) is loaded as
    ``load_pretrained_model(model_base, None, ...)`` does but with the LoRA folder's ``config.json``
    (a ``customized_config`` replaces it; ``overwrite_config`` applies on top), then
    :func:`llava.model.lora_loading.merge_lora_folder` loads ``non_lora_trainables.bin`` into it and
    merges the adapter. An ``aot_compression`` in the config is re-applied by the model.
    ``load_kwargs`` are those of ``load_pretrained_model`` (``model_name``, ``device_map``,
    ``torch_dtype``, ``attn_implementation``, …). The tokenizer is the folder's when it holds one,
    else the base's.
    """
    require_peft()  # before the base is loaded
    path = resolve_model_path(model_path)
    base_path = lora_base(path, model_base)
    kwargs = dict(load_kwargs)
    model_name = kwargs.pop("model_name", "llava_qwen")
    if kwargs.get("customized_config") is None and (path / "config.json").is_file():
        kwargs["customized_config"] = str(path / "config.json")
    tokenizer, model, image_processor, context_len = load_pretrained_model(base_path, None, model_name, **kwargs)
    model = merge_lora_folder(model, path)
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=kwargs.get("use_fast", True))
    return tokenizer, model, image_processor, context_len

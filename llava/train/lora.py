"""LoRA on the LLM of a LLaVA model, trained and saved as LLaVA-NeXT does it (with ``peft``).

:func:`apply_lora` wraps a model for training, :func:`save_lora` writes a LoRA output folder. The
folder's format (:mod:`llava.model.lora_loading`) and its loading for inference
(:func:`llava.model.builder.load_lora`, which ``load_pretrained_model`` calls on such a folder)
belong to the model layer; their names are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava.model.builder import load_lora
from llava.model.lora_loading import (
    ADAPTER_CONFIG,
    BASE_KEY,
    NON_LORA_TRAINABLES,
    is_lora_folder,
    recorded_base,
    require_peft,
)

__all__ = [
    "ADAPTER_CONFIG",
    "BASE_KEY",
    "NON_LORA_TRAINABLES",
    "apply_lora",
    "is_lora_folder",
    "llava_config_dict",
    "load_lora",
    "lora_target_modules",
    "recorded_base",
    "require_peft",
    "save_lora",
]

# modules never given LoRA (LLaVA-NeXT's find_all_linear_names skips these and lm_head)
MULTIMODAL_KEYWORDS = ("mm_projector", "vision_tower", "vision_resampler")


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full names of the LLM's linear layers (Qwen2: ``model.layers.{i}.self_attn.{q,k,v,o}_proj``,
    ``model.layers.{i}.mlp.{gate,up,down}_proj``), in module order.

    The vision tower, the projector, a resampler and ``lm_head`` are never included. Full names,
    not LLaVA-NeXT's last components: SigLIP's ``q_proj``/``k_proj``/``v_proj`` would match those.
    """
    names = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not any(k in name for k in MULTIMODAL_KEYWORDS)
        and name.split(".")[-1] != "lm_head"
    ]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layer outside the vision tower, projector and lm_head; "
                         "expected a LLaVA model with a language model")
    return names


def apply_lora(model: nn.Module, *, r: int = 64, alpha: int = 16, dropout: float = 0.05, bias: str = "none"):
    """Wrap ``model`` in a ``peft.PeftModel`` (task ``CAUSAL_LM``) with LoRA on the LLM's linear layers.

    Parameters outside LoRA keep the ``requires_grad`` they had (the caller freezes by
    ``mm_tunable_parts``; e.g. the projector may stay trainable); with ``bias`` other than
    ``"none"`` peft also makes the biases it selects trainable.
    """
    peft = require_peft()
    if r <= 0:
        raise ValueError(f"lora r={r} is not valid; expected a positive rank")
    if bias not in ("none", "all", "lora_only"):
        raise ValueError(f"lora bias={bias!r} is not valid; expected 'none', 'all' or 'lora_only'")
    if isinstance(model, peft.PeftModel):
        raise ValueError("apply_lora: the model is already a PeftModel; expected the plain LLaVA model")
    before = {id(p): p.requires_grad for p in model.parameters()}
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias,
                             target_modules=lora_target_modules(model), task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_" not in name and before.get(id(param), False):
            param.requires_grad_(True)
    return peft_model


def _full_tensor(param: torch.Tensor) -> torch.Tensor:
    """A CPU copy of ``param``; a DeepSpeed ZeRO-3 partitioned parameter is gathered first (collective:
    every rank must call this for the same parameters)."""
    if hasattr(param, "ds_id"):
        from deepspeed import zero

        with zero.GatheredParameters([param]):
            return param.data.detach().cpu().clone()
    return param.detach().cpu().clone()


def _is_main_process() -> bool:
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def _record_base(model_base: str) -> str:
    """How a base is recorded: an existing local folder as an absolute path, anything else (a hub id) as given."""
    path = Path(model_base).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model_base)


def llava_config_dict(config: Any, **extra: Any) -> dict:
    """``config`` (a LlavaQwenConfig) as the ``config.json`` of LLaVA-NeXT's original layout
    (``model_type "llava"``, ``architectures ["LlavaQwenForCausalLM"]``, ``rope_theta`` and ``torch_dtype``
    next to transformers 5's ``rope_parameters`` and ``dtype``), with ``extra`` keys set (``None`` removes)."""
    data = config.to_diff_dict()  # what save_pretrained writes
    data["architectures"] = ["LlavaQwenForCausalLM"]
    data["model_type"] = "llava"
    rope = data.get("rope_parameters") or {}
    if "rope_theta" not in data and "rope_theta" in rope:
        data["rope_theta"] = rope["rope_theta"]
    if data.get("dtype") is not None:
        data.setdefault("torch_dtype", data["dtype"])
    for key, value in extra.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def save_lora(peft_model: Any, output_dir: str | Path, *, model_base: str, tokenizer: Any = None) -> Path:
    """Write a LoRA output folder (its format: :mod:`llava.model.lora_loading`) for ``peft_model``
    trained over ``model_base``.

    Under DeepSpeed ZeRO-3 call it on every rank: partitioned parameters are gathered (a collective);
    only rank 0 writes. Returns the folder.
    """
    peft = require_peft()
    if not isinstance(peft_model, peft.PeftModel):
        raise ValueError(f"save_lora: got {type(peft_model).__name__}; expected the peft.PeftModel from apply_lora")
    if not model_base:
        raise ValueError(f"save_lora: model_base={model_base!r}; expected the base checkpoint (hub id or folder) the "
                         "adapter was trained on")
    out = Path(output_dir)
    base = _record_base(model_base)
    adapter = peft_model.peft_config[peft_model.active_adapter]
    with_bias = getattr(adapter, "bias", "none") != "none"
    adapter_state, non_lora = {}, {}
    for name, param in peft_model.named_parameters():
        if "lora_" in name or (with_bias and "bias" in name):
            adapter_state[name] = _full_tensor(param)
        if "lora_" not in name and param.requires_grad:
            non_lora[name] = adapter_state[name] if name in adapter_state else _full_tensor(param)
    main = _is_main_process()
    if not main:
        return out
    out.mkdir(parents=True, exist_ok=True)
    recorded, adapter.base_model_name_or_path = adapter.base_model_name_or_path, base
    try:
        # embeddings trained outside LoRA go to non_lora_trainables.bin, as in LLaVA-NeXT
        peft_model.save_pretrained(str(out), state_dict=adapter_state, save_embedding_layers=False)
    finally:
        adapter.base_model_name_or_path = recorded
    torch.save(non_lora, out / NON_LORA_TRAINABLES)
    llava = peft_model.get_base_model()
    (out / "config.json").write_text(
        json.dumps(llava_config_dict(llava.config, **{BASE_KEY: base}), indent=2, sort_keys=True) + "\n"
    )
    if getattr(llava, "generation_config", None) is not None:
        llava.generation_config.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out

"""LoRA on the LLM of a LLaVA model, saved and reloaded as LLaVA-NeXT does it (with ``peft``).

A LoRA output folder holds:

- ``adapter_config.json``, ``adapter_model.safetensors`` (and peft's ``README.md``): the adapter, as
  ``PeftModel.save_pretrained`` writes it; ``base_model_name_or_path`` names the base.
- ``non_lora_trainables.bin``: ``torch.save`` of the trainable parameters outside LoRA (e.g. the
  projector), keyed as ``named_parameters()`` of the ``PeftModel`` (``base_model.model.model.mm_projector.0.weight``).
- ``config.json``: the LLaVA model's config in the original layout, plus ``lora_base_model``: the
  base checkpoint the adapter was trained on (a hub id, or an absolute folder path).
- the tokenizer files and ``generation_config.json`` when given / present.

``load_pretrained_model(lora_dir, base_or_None, ...)`` (:func:`load_lora`) rebuilds the base with
the folder's config, loads the non-LoRA trainables, applies the adapter and merges it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

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

ADAPTER_CONFIG = "adapter_config.json"
NON_LORA_TRAINABLES = "non_lora_trainables.bin"
BASE_KEY = "lora_base_model"  # config.json key recording the base checkpoint of a LoRA folder

# modules never given LoRA (LLaVA-NeXT's find_all_linear_names skips these and lm_head)
MULTIMODAL_KEYWORDS = ("mm_projector", "vision_tower", "vision_resampler")
_PEFT_PREFIX = "base_model.model."


def require_peft():
    """The ``peft`` module, or an ImportError saying how to install it (an optional extra)."""
    try:
        import peft
    except ImportError as exc:
        raise ImportError(
            'LoRA needs peft, which is not installed; install the training extra: pip install -e ".[train]"'
        ) from exc
    return peft


def is_lora_folder(path: str | Path) -> bool:
    """Whether ``path`` is a LoRA output folder (it holds ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


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
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


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
    """Write a LoRA output folder (see the module docstring) for ``peft_model`` trained over ``model_base``.

    Under DeepSpeed ZeRO-3 call it on every rank: partitioned parameters are gathered (a collective);
    only rank 0 writes. Returns the folder.
    """
    peft = require_peft()
    if not isinstance(peft_model, peft.PeftModel):
        raise ValueError(f"save_lora: got {type(peft_model).__name__}; expected the peft.PeftModel from apply_lora")
    if not model_base:
        raise ValueError(f"save_lora: model_base={model_base!r}; expected the base checkpoint (hub id or folder) the adapter was trained on")
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
    (out / "config.json").write_text(json.dumps(llava_config_dict(llava.config, **{BASE_KEY: base}), indent=2, sort_keys=True) + "\n")
    if getattr(llava, "generation_config", None) is not None:
        llava.generation_config.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def recorded_base(lora_dir: str | Path) -> str | None:
    """The base recorded in a LoRA folder: ``config.json``'s ``lora_base_model``, else
    ``adapter_config.json``'s ``base_model_name_or_path``; None when neither names one."""
    path = Path(lora_dir)
    for name, key in (("config.json", BASE_KEY), (ADAPTER_CONFIG, "base_model_name_or_path")):
        file = path / name
        if file.is_file():
            value = json.loads(file.read_text()).get(key)
            if value:
                return str(value)
    return None


def _llava_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of ``named_parameters()`` of a PeftModel -> the LLaVA model's own names."""
    state = {(k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):  # as LLaVA-NeXT's loader: one more wrapper level
        state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    # base weights of a LoRA-wrapped linear, trained as well (a language model tuned besides its adapters)
    return {k.replace(".base_layer.", "."): v for k, v in state.items()}


def _load_non_lora(model: nn.Module, lora_dir: Path) -> None:
    from llava.model.builder import CheckpointLayoutError

    file = lora_dir / NON_LORA_TRAINABLES
    if not file.is_file():
        warnings.warn(
            f"{lora_dir}: no {NON_LORA_TRAINABLES}; only the LoRA adapter is applied, every other weight is the "
            "base's (right when nothing but LoRA was trained, e.g. a plain peft adapter)",
            stacklevel=3,
        )
        return
    state = _llava_keys(torch.load(file, map_location="cpu", weights_only=True))
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                        if k in own and v.shape != own[k].shape)
    if unexpected or mismatched:
        raise CheckpointLayoutError(
            f"{file}: tensors that do not fit the base model; unknown names: {unexpected[:20]}; shape mismatches "
            f"(file vs model): {mismatched[:20]}; expected named_parameters() names of the LLaVA model (under {_PEFT_PREFIX!r}) "
            "and the base the adapter was trained on"
        )
    model.load_state_dict(state, strict=False)


def load_lora(model_path: str | Path, model_base: str | None = None, **load_kwargs: Any):
    """LLaVA-NeXT's LoRA loading. Returns ``(tokenizer, merged_model, image_processor, context_len)``.

    The base (``model_base``, or the one the folder records: see :func:`recorded_base`) is loaded as
    ``load_pretrained_model(model_base, None, ...)`` does but with the LoRA folder's ``config.json``
    (a ``customized_config`` replaces it; ``overwrite_config`` applies on top), then ``non_lora_trainables.bin``
    is loaded into it, then the adapter is applied and merged (``merge_and_unload``). An
    ``aot_compression`` in the config is re-applied by the model. ``load_kwargs`` are those of
    ``load_pretrained_model`` (``model_name``, ``device_map``, ``torch_dtype``, ``attn_implementation``, …).
    The tokenizer is the folder's when it holds one, else the base's.
    """
    peft = require_peft()
    from transformers import AutoTokenizer

    from llava.model.builder import CheckpointLayoutError, load_pretrained_model, resolve_model_path

    path = resolve_model_path(model_path)
    if not is_lora_folder(path):
        raise CheckpointLayoutError(f"{path}: no {ADAPTER_CONFIG}; expected a LoRA output folder")
    if model_base is not None:
        base, source = str(model_base), "model_base"
    else:
        base, source = recorded_base(path), f"recorded in {path}"
        if base is None:
            raise ValueError(
                f"{path}: LoRA folder that records no base model (neither config.json's {BASE_KEY!r} nor "
                f"{ADAPTER_CONFIG}'s 'base_model_name_or_path'); pass model_base (the checkpoint the adapter was trained on)"
            )
    try:
        base_path = resolve_model_path(base)
    except CheckpointLayoutError as exc:
        raise CheckpointLayoutError(
            f"{path}: base model {base!r} ({source}) cannot be found: {exc}; pass model_base=<the base checkpoint folder or hub id>"
        ) from exc
    if base_path.resolve() == path.resolve():
        raise ValueError(f"model_base={base!r} is the LoRA folder itself; expected the base checkpoint the adapter was trained on")
    kwargs = dict(load_kwargs)
    model_name = kwargs.pop("model_name", "llava_qwen")
    if kwargs.get("customized_config") is None and (path / "config.json").is_file():
        kwargs["customized_config"] = str(path / "config.json")
    use_fast = kwargs.get("use_fast", True)
    tokenizer, model, image_processor, context_len = load_pretrained_model(base_path, None, model_name, **kwargs)
    _load_non_lora(model, path)
    model = peft.PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    if hasattr(model.config, BASE_KEY):  # the merged model is a full model
        delattr(model.config, BASE_KEY)
    model.eval()
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=use_fast)
    return tokenizer, model, image_processor, context_len

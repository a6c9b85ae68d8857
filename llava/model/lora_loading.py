"""A LoRA output folder for inference: the model layer's half of LoRA (training is :mod:`llava.train.lora`).

A LoRA output folder (written by ``llava.train.lora.save_lora``, as LLaVA-NeXT does it) holds:

- ``adapter_config.json``, ``adapter_model.safetensors`` (and peft's ``README.md``): the adapter, as
  ``PeftModel.save_pretrained`` writes it; ``base_model_name_or_path`` names the base.
- ``non_lora_trainables.bin``: ``torch.save`` of the trainable parameters outside LoRA (e.g. the
  projector), keyed as ``named_parameters()`` of the ``PeftModel``
  (``base_model.model.model.mm_projector.0.weight``).
- ``config.json``: the LLaVA model's config in the original layout, plus ``lora_base_model``: the
  base checkpoint the adapter was trained on (a hub id, or an absolute folder path).
- the tokenizer files and ``generation_config.json`` when given / present.

``load_pretrained_model(lora_dir, base_or_None, ...)`` (:func:`llava.model.builder.load_lora`) finds
the base (:func:`lora_base`), loads it with the folder's config, then :func:`merge_lora_folder` loads
the non-LoRA trainables, applies the adapter and merges it. Nothing here imports peft until a folder
is merged (:func:`require_peft`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from llava.model.checkpoint import CheckpointLayoutError, resolve_model_path

__all__ = [
    "ADAPTER_CONFIG",
    "BASE_KEY",
    "NON_LORA_TRAINABLES",
    "is_lora_folder",
    "lora_base",
    "merge_lora_folder",
    "recorded_base",
    "require_peft",
]

ADAPTER_CONFIG = "adapter_config.json"
NON_LORA_TRAINABLES = "non_lora_trainables.bin"
BASE_KEY = "lora_base_model"  # config.json key recording the base checkpoint of a LoRA folder

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
            f"(file vs model): {mismatched[:20]}; expected named_parameters() names of the LLaVA model "
            f"(under {_PEFT_PREFIX!r}) and the base the adapter was trained on"
        )
    model.load_state_dict(state, strict=False)


def lora_base(lora_dir: str | Path, model_base: str | Path | None = None) -> Path:
    """The folder of the base checkpoint a LoRA folder is loaded over: ``model_base`` when given,
    else the one the folder records (:func:`recorded_base`); a ValueError when neither names one or
    it is the LoRA folder itself, a :class:`CheckpointLayoutError` when it cannot be found."""
    path = Path(lora_dir)
    if not is_lora_folder(path):
        raise CheckpointLayoutError(f"{path}: no {ADAPTER_CONFIG}; expected a LoRA output folder")
    if model_base is not None:
        base, source = str(model_base), "model_base"
    else:
        base, source = recorded_base(path), f"recorded in {path}"
        if base is None:
            raise ValueError(
                f"{path}: LoRA folder that records no base model (neither config.json's {BASE_KEY!r} nor "
                f"{ADAPTER_CONFIG}'s 'base_model_name_or_path'); pass model_base (the checkpoint the adapter "
                "was trained on)"
            )
    try:
        base_path = resolve_model_path(base)
    except CheckpointLayoutError as exc:
        raise CheckpointLayoutError(
            f"{path}: base model {base!r} ({source}) cannot be found: {exc}; "
            "pass model_base=<the base checkpoint folder or hub id>"
        ) from exc
    if base_path.resolve() == path.resolve():
        raise ValueError(f"model_base={base!r} is the LoRA folder itself; "
                         "expected the base checkpoint the adapter was trained on")
    return base_path


def merge_lora_folder(model: nn.Module, lora_dir: str | Path) -> nn.Module:
    """``model`` (the base, loaded with the LoRA folder's config) with the folder's
    ``non_lora_trainables.bin`` loaded, the adapter applied and merged (``merge_and_unload``); in
    eval mode, without the ``lora_base_model`` config key (the merged model is a full model)."""
    peft = require_peft()
    path = Path(lora_dir)
    _load_non_lora(model, path)
    model = peft.PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    if hasattr(model.config, BASE_KEY):
        delattr(model.config, BASE_KEY)
    return model.eval()

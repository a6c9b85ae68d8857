"""Supervised fine-tuning of a LLaVA-NeXT checkpoint, with AOT in the loop (``--compression``).

One GPU or CPU (the tiny configuration the tests use)::

    python -m llava.train.train configs/train/tiny_cpu.yaml

One node, 8 GPUs, DeepSpeed ZeRO-2, LoRA::

    NUM_GPUS=8 bash scripts/train/finetune.sh configs/train/llava_ov_7b_aot_lora.yaml
    # = python -m torch.distributed.run --nproc_per_node 8 -m llava.train.train configs/train/llava_ov_7b_aot_lora.yaml

The flags are LLaVA-NeXT's (``--model_name_or_path --version --data_path --image_folder
--video_folder --frames_upbound --mm_tunable_parts --lora_enable --lora_r --lora_alpha --deepspeed
--bf16 --gradient_checkpointing --model_max_length``) plus Hugging Face ``TrainingArguments`` and
``--compression <preset | YAML | none>``. A YAML of flags may come first; later flags override it.

The recipe: ``setup`` (arguments, every data record validated, model, freezing, LoRA, dataset) ->
``trainer.train`` (resumable with ``--resume_from_checkpoint``) -> ``save`` (a full checkpoint in
LLaVA-NeXT's original layout, or the LoRA adapter with its base recorded), which
``load_pretrained_model`` reloads.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llava.model.builder import load_pretrained_model
from llava.train.arguments import DataArguments, ModelArguments, TrainingArguments, parse_args
from llava.train.data import (
    DataCollatorForSupervisedDataset,
    SupervisedDataset,
    load_valid_records,
    system_message_from_template,
)
from llava.train.lora import apply_lora, save_lora
from llava.train.trainer import LLaVATrainer

logger = logging.getLogger(__name__)


@dataclass
class Setup:
    model_args: ModelArguments
    data_args: DataArguments
    training_args: TrainingArguments
    tokenizer: Any
    model: Any
    image_processor: Any
    dataset: Any
    collator: Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_env(argv: list[str]) -> None:
    """DeepSpeed needs a process group even for one process: when no launcher set one up, describe a
    world of one (what ``deepspeed``/``torchrun`` would export)."""
    if "RANK" in os.environ:
        return
    if not any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv) and not _yaml_has_deepspeed(argv):
        return
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def _yaml_has_deepspeed(argv: list[str]) -> bool:
    if not argv or not argv[0].endswith((".yaml", ".yml")) or not Path(argv[0]).is_file():
        return False
    data = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    return isinstance(data, dict) and bool(data.get("deepspeed"))


def _setup_model(model_args: ModelArguments, training_args: TrainingArguments):
    overwrite: dict[str, Any] = {"use_cache": False, "tokenizer_model_max_length": training_args.model_max_length,
                                 "tokenizer_padding_side": "right"}
    if model_args.mm_spatial_pool_mode:
        overwrite["mm_spatial_pool_mode"] = model_args.mm_spatial_pool_mode
    if model_args.mm_newline_position:
        overwrite["mm_newline_position"] = model_args.mm_newline_position
    dtype = "bfloat16" if training_args.bf16 else "float16" if training_args.fp16 else "float32"
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_args.model_name_or_path, None, "llava_qwen", device_map=None, torch_dtype=dtype,
        attn_implementation=model_args.attn_implementation, overwrite_config=overwrite,
    )
    model.set_compression(model_args.compression)
    model.time_visual = bool(training_args.time_visual)  # off by default: no timing in the training step
    model.config.mm_tunable_parts = model_args.mm_tunable_parts
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, image_processor


def _set_trainable(model: Any, parts: list[str], lora: bool) -> None:
    """LLaVA-NeXT's ``mm_tunable_parts``: everything frozen, then the named parts trainable. With LoRA
    the language model's own weights stay frozen (its adapters are trained instead)."""
    model.requires_grad_(False)
    inner = model.get_model()
    if "mm_mlp_adapter" in parts:
        inner.mm_projector.requires_grad_(True)
    if "mm_vision_tower" in parts:
        inner.vision_tower.requires_grad_(True)
    if "mm_vision_resampler" in parts:
        logger.info("mm_vision_resampler: these checkpoints have no resampler parameters; nothing to train")
    if "mm_language_model" in parts and not lora:
        for name, param in model.named_parameters():
            if "vision_tower" not in name and "mm_projector" not in name:
                param.requires_grad_(True)


def setup(argv: list[str] | None = None) -> Setup:
    argv = list(sys.argv[1:] if argv is None else argv)
    _single_process_env(argv)
    model_args, data_args, training_args = parse_args(argv)
    if training_args.gradient_checkpointing:
        kwargs = training_args.gradient_checkpointing_kwargs
        training_args.gradient_checkpointing_kwargs = kwargs or {"use_reentrant": False}
    # every record checked before the model loads: a bad data path fails in seconds, not mid-epoch
    validation = load_valid_records(
        data_args.data_path, image_folder=data_args.image_folder, video_folder=data_args.video_folder,
        max_invalid_fraction=data_args.max_invalid_fraction,
    )
    tokenizer, model, image_processor = _setup_model(model_args, training_args)
    parts = model_args.tunable_parts()
    _set_trainable(model, parts, training_args.lora_enable)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    if training_args.lora_enable:
        model = apply_lora(model, r=training_args.lora_r, alpha=training_args.lora_alpha,
                           dropout=training_args.lora_dropout, bias=training_args.lora_bias)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise ValueError(f"--mm_tunable_parts {model_args.mm_tunable_parts!r} with "
                         f"lora_enable={training_args.lora_enable} leaves no parameter to train")
    logger.info("trainable parameters: %d of %d", trainable, sum(p.numel() for p in model.parameters()))
    llava = model.get_base_model() if hasattr(model, "get_base_model") else model
    aot = llava.compression
    dataset = SupervisedDataset(
        data_args.data_path, tokenizer, image_processor, model_config=llava.config,
        image_folder=data_args.image_folder, video_folder=data_args.video_folder,
        frames_upbound=data_args.frames_upbound, video_fps=data_args.video_fps, force_sample=data_args.force_sample,
        min_frames=min(aot.num_clips, data_args.frames_upbound) if aot is not None and aot.inter_frame else 1,
        add_time_instruction=data_args.add_time_instruction, model_max_length=training_args.model_max_length,
        system_message=system_message_from_template(model_args.version), validation=validation,
    )
    collator = DataCollatorForSupervisedDataset(tokenizer, model_max_length=training_args.model_max_length)
    return Setup(model_args, data_args, training_args, tokenizer, model, image_processor, dataset, collator)


def _resume_arg(value: Any) -> Any:
    if value in (None, "", "False", "false"):
        return None
    if value in (True, "True", "true"):
        return True
    if not Path(str(value)).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value}: no such folder; expected a checkpoint-N folder or True "
                         "(the latest)")
    return str(value)


def save(s: Setup, trainer: Any) -> Path:
    """The final model: a full checkpoint (original LLaVA-NeXT layout) or the LoRA adapter, its
    non-LoRA trainables and config with the base recorded; both reload with ``load_pretrained_model``."""
    out = Path(s.training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if s.training_args.lora_enable:
        if trainer.is_deepspeed_enabled or trainer.args.should_save:
            save_lora(trainer.accelerator.unwrap_model(trainer.model) if trainer.is_deepspeed_enabled else s.model, out,
                      model_base=s.model_args.model_name_or_path,
                      tokenizer=s.tokenizer if trainer.args.should_save else None)
    else:
        trainer.save_model(str(out))
        if trainer.args.should_save:
            s.tokenizer.save_pretrained(str(out))
    trainer.accelerator.wait_for_everyone()
    return out


def train(argv: list[str] | None = None) -> Path:
    """Set up, train, save; returns the output folder."""
    s = setup(argv)
    trainer = LLaVATrainer(model=s.model, args=s.training_args, train_dataset=s.dataset, data_collator=s.collator,
                           processing_class=s.tokenizer)
    trainer.train(resume_from_checkpoint=_resume_arg(s.training_args.resume_from_checkpoint))
    if trainer.skipped_samples:
        logger.warning("%d sample(s) were skipped (missing or unreadable video/image); see the warnings above",
                       trainer.skipped_samples)
    return save(s, trainer)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = train(argv)
    except ValueError as exc:
        print(f"llava.train.train: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

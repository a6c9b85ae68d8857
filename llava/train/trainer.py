"""``LLaVATrainer``: the Hugging Face ``Trainer`` plus what LLaVA-NeXT training adds.

* per-part learning rates (``--mm_projector_lr``, ``--mm_vision_tower_lr``);
* ``--group_by_modality_length``: batches hold only multimodal or only text-only samples;
* logging, with every ``logging_steps``, of what AOT did to the batches since the last log
  (``aot/visual_tokens``, ``aot/visual_tokens_plain``, ``aot/retention``, ``aot/compression_ms``) and
  of the samples the dataset skipped so far (``data/skipped_samples``), so wandb, TensorBoard and
  ``trainer_state.json`` all get them.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer


def unwrap_llava(model: Any) -> Any:
    """The ``LlavaQwenForCausalLM`` inside DeepSpeed / DDP / peft wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
    return model


class ModalityGroupedSampler(Sampler[int]):
    """Shuffled indices in which each run of ``group`` consecutive indices holds only multimodal or
    only text-only samples (LLaVA-NeXT's ``group_by_modality_length``, without the length sorting).

    ``lengths``: one entry per sample, positive for samples with images or videos, negative for text."""

    def __init__(self, lengths: list[int], group: int, seed: int = 0) -> None:
        if group < 1:
            raise ValueError(f"group={group}: expected >= 1 (per-device batch size x world size)")
        self.lengths, self.group, self.seed, self.epoch = list(lengths), group, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        chunks = []
        for want_mm in (True, False):
            idx = [i for i, n in enumerate(self.lengths) if (n > 0) == want_mm]
            rng.shuffle(idx)
            chunks += [idx[i : i + self.group] for i in range(0, len(idx), self.group)]
        rng.shuffle(chunks)
        return iter([i for chunk in chunks for i in chunk])


class LLaVATrainer(Trainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._visual: list[tuple[int, int, float, float]] = []  # (tokens, tokens_plain, retention, compression_ms)
        self.skipped_samples = 0

    # -- batches
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop("skipped_samples", None)
        if skipped is not None:
            self.skipped_samples += int(skipped)
        llava = unwrap_llava(model)
        llava.last_visual_stats = None
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        for s in getattr(llava, "last_visual_stats", None) or []:
            if s.modality == "video":
                self._visual.append((s.visual_tokens, s.visual_tokens_plain, s.retention, s.compression_ms))
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._visual and "loss" in logs:
            n = len(self._visual)
            logs["aot/visual_tokens"] = sum(v[0] for v in self._visual) / n
            logs["aot/visual_tokens_plain"] = sum(v[1] for v in self._visual) / n
            logs["aot/retention"] = sum(v[2] for v in self._visual) / n
            timed = [v[3] for v in self._visual if v[3] is not None]  # timing is off in training unless asked
            if timed:
                logs["aot/compression_ms"] = sum(timed) / len(timed)
            self._visual.clear()
        if "loss" in logs:
            logs["data/skipped_samples"] = self.skipped_samples
        super().log(logs, start_time)

    # -- sampling
    def _get_train_sampler(self, *args, **kwargs):
        if self.args.group_by_modality_length and hasattr(self.train_dataset, "modality_lengths"):
            group = self.args.train_batch_size * self.args.world_size
            return ModalityGroupedSampler(self.train_dataset.modality_lengths, group, seed=self.args.seed)
        return super()._get_train_sampler(*args, **kwargs)

    # -- optimizer with per-part learning rates
    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is not None:
            return self.optimizer
        special = {"mm_projector": self.args.mm_projector_lr, "vision_tower": self.args.mm_vision_tower_lr}
        if all(lr is None for lr in special.values()):
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            lr = next((v for k, v in special.items() if v is not None and k in name), self.args.learning_rate)
            wd = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((lr, wd), []).append(param)
        param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

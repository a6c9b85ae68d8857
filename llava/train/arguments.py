"""Command-line arguments of ``python -m llava.train.train``: LLaVA-NeXT's flag names, plus
``--compression``, on top of Hugging Face ``TrainingArguments``.

A YAML file of ``flag: value`` pairs may come first on the command line; flags given after it
override it (``python -m llava.train.train configs/train/tiny_cpu.yaml --max_steps 2``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers
import yaml

import visionzip
from llava.train.data import DEFAULT_MAX_INVALID_FRACTION

#: LLaVA-NeXT's ``mm_tunable_parts``.
TUNABLE_PARTS = ("mm_mlp_adapter", "mm_vision_resampler", "mm_vision_tower", "mm_language_model")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "LLaVA-NeXT checkpoint (original layout): folder or hub id"})
    version: str = field(default="qwen_1_5", metadata={"help": "conversation template (LLaVA-NeXT's --version)"})
    mm_tunable_parts: str = field(
        default="mm_mlp_adapter,mm_language_model",
        metadata={"help": f"comma-separated parts to train, of {', '.join(TUNABLE_PARTS)}"},
    )
    mm_spatial_pool_mode: str | None = field(
        default=None, metadata={"help": "override the checkpoint's pooling (bilinear, average, max)"},
    )
    mm_newline_position: str | None = field(
        default=None, metadata={"help": "override the checkpoint's newline position"},
    )
    compression: str = field(default="none", metadata={"help": "AOT in the loop: a preset name, a YAML path, or none"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager or flash_attention_2"})

    def tunable_parts(self) -> list[str]:
        parts = [p.strip() for p in self.mm_tunable_parts.split(",") if p.strip()]
        unknown = [p for p in parts if p not in TUNABLE_PARTS]
        if unknown or not parts:
            raise ValueError(f"--mm_tunable_parts {self.mm_tunable_parts!r}: expected a comma-separated subset of "
                             f"{', '.join(TUNABLE_PARTS)}")
        return parts


@dataclass
class DataArguments:
    data_path: str = field(
        metadata={"help": "LLaVA JSON list, JSONL, or a YAML mixture (datasets: [{json_path, sampling_strategy}])"},
    )
    image_folder: str | None = field(default=None, metadata={"help": "root of the samples' image paths"})
    video_folder: str | None = field(default=None, metadata={"help": "root of the samples' video paths"})
    frames_upbound: int = field(
        default=32, metadata={"help": "frames per video (uniform when the 1-fps sampling gives more)"},
    )
    video_fps: int = field(default=1, metadata={"help": "frames per second of the fps sampling"})
    force_sample: bool = field(default=False, metadata={"help": "always sample frames_upbound frames uniformly"})
    add_time_instruction: bool = field(default=False, metadata={"help": "prepend LLaVA-Video's time instruction"})
    max_invalid_fraction: float = field(
        default=DEFAULT_MAX_INVALID_FRACTION,
        metadata={"help": "largest fraction of records that may fail validation (dropped before the first step); "
                          "more, or none valid, stops the run before the model loads"},
    )

    def __post_init__(self):
        if not 0 <= self.max_invalid_fraction <= 1:
            raise ValueError(f"--max_invalid_fraction {self.max_invalid_fraction}: expected a fraction in [0, 1]")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int = field(
        default=32768, metadata={"help": "sequences are truncated (right) to this many tokens"},
    )
    time_visual: bool = field(
        default=False, metadata={"help": "time the vision tower and compression per step (CUDA events; logged as "
                                         "aot/compression_ms)"},
    )
    lora_enable: bool = field(default=False, metadata={"help": "train LoRA adapters on the LLM's linear layers"})
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_bias: str = "none"
    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "learning rate of the projector (default: --learning_rate)"},
    )
    mm_vision_tower_lr: float | None = field(
        default=None, metadata={"help": "learning rate of the vision tower (default: --learning_rate)"},
    )
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "batch video/image samples and text-only samples apart"},
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "must stay False: batches carry images"})
    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "LLaVA-NeXT's flag, kept: the fraction of steps to warm up over (transformers 5 reads it "
                          "from --warmup_steps < 1)"},
    )

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio}: expected a fraction in [0, 1)")
            if self.warmup_steps:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio} and --warmup_steps {self.warmup_steps}: give "
                                 "one of them")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


def _yaml_to_argv(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc}); expected a mapping of train flags to values") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of train flags to values (model_name_or_path: ..., data_path: "
                         "...)")
    argv: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, (list, dict)):
            raise ValueError(f"{path}: {key} is a {type(value).__name__}; expected a scalar (write lists as 'a,b')")
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def check_deepspeed_config(value: str | None) -> None:
    """A DeepSpeed config must be a readable JSON object: checked before anything is loaded."""
    if value is None:
        return
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--deepspeed {value}: no such file; expected a DeepSpeed JSON config such as "
                         "configs/deepspeed/zero2.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--deepspeed {value}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                         "expected a DeepSpeed config") from None
    if not isinstance(data, dict) or "zero_optimization" not in data:
        raise ValueError(f"--deepspeed {value}: expected a JSON object with a 'zero_optimization' section")


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse ``[CONFIG.yaml] --flag value ...`` into the three argument dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv[0])
        if not path.is_file():
            raise ValueError(f"train config {argv[0]}: no such file")
        argv = _yaml_to_argv(path) + argv[1:]
    deepspeed = None
    for i, arg in enumerate(argv):
        if arg == "--deepspeed" and i + 1 < len(argv):
            deepspeed = argv[i + 1]
        elif arg.startswith("--deepspeed="):
            deepspeed = arg.split("=", 1)[1]
    check_deepspeed_config(deepspeed)
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    model_args.tunable_parts()
    visionzip.load_config(model_args.compression)  # an unknown preset fails here, listing the presets
    return model_args, data_args, training_args


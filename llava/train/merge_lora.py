"""Merge a LoRA output folder into a full checkpoint in LLaVA-NeXT's original layout.

    python -m llava.train.merge_lora --model-path runs/train/llava_ov_7b_aot_lora \\
        --model-base lmms-lab/llava-onevision-qwen2-7b-ov --save-path runs/train/llava_ov_7b_aot_merged

``--model-base`` may be left out: the base recorded in the LoRA folder is used. The flags are those
of LLaVA's ``scripts/merge_lora_weights.py`` (``--save-model-path`` is accepted for ``--save-path``).
The result (``config.json``, safetensors shards with their index under the original key names, the
tokenizer) reloads with ``load_pretrained_model(save_path, None, ...)`` and runs in lmms-eval.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from llava.model.builder import check_checkpoint_keys, load_pretrained_model, resolve_model_path
from llava.train.lora import BASE_KEY, is_lora_folder, llava_config_dict, recorded_base

__all__ = ["main", "merge_lora"]


def _copy_slow_tokenizer_files(out: Path, sources: list[Path]) -> None:
    """Released checkpoints ship ``vocab.json`` and ``merges.txt`` next to ``tokenizer.json`` (read by
    ``use_fast=False`` loaders); transformers 5 writes only the latter: copy them from the first source
    that has them."""
    for name in ("vocab.json", "merges.txt"):
        found = next((src / name for src in sources if (src / name).is_file()), None)
        if not (out / name).exists() and found is not None:
            shutil.copyfile(found, out / name)


def merge_lora(model_path: str, model_base: str | None, save_path: str | Path, *, device: str = "cpu",
               torch_dtype: str = "auto", max_shard_size: str = "5GB") -> Path:
    """Load ``model_path`` (a LoRA folder) over ``model_base`` merged, and save it to ``save_path``."""
    lora_dir = resolve_model_path(model_path)
    if not is_lora_folder(lora_dir):
        raise ValueError(f"--model-path {model_path}: no adapter_config.json; expected a LoRA output folder")
    out = Path(save_path)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--save-path {out} exists and is not empty; expected a new folder")
    tokenizer, model, _, _ = load_pretrained_model(model_path, model_base, "llava_qwen", device_map=device,
                                                   torch_dtype=torch_dtype, attn_implementation="sdpa")
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    # original layout: model_type "llava", rope_theta / torch_dtype spelled out for older readers
    (out / "config.json").write_text(
        json.dumps(llava_config_dict(model.config, **{BASE_KEY: None}), indent=2, sort_keys=True) + "\n"
    )
    tokenizer.save_pretrained(str(out))
    _copy_slow_tokenizer_files(out, [lora_dir, resolve_model_path(model_base or recorded_base(lora_dir))])
    check_checkpoint_keys(model, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.train.merge_lora", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="LoRA output folder (adapter_config.json, "
                                                            "non_lora_trainables.bin, config.json)")
    parser.add_argument("--model-base", default=None, help="base checkpoint (folder or hub id); default: the one the "
                                                           "LoRA folder records")
    parser.add_argument("--save-path", "--save-model-path", dest="save_path", required=True, help="folder for the "
                                                                                                  "merged checkpoint")
    parser.add_argument("--device", default="cpu", help="where to merge: cpu (default), cuda, auto")
    parser.add_argument("--torch-dtype", default="auto", help="dtype of the merged weights: auto (the base's), "
                                                              "bfloat16, float16, float32")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    args = parser.parse_args(argv)
    try:
        out = merge_lora(args.model_path, args.model_base, args.save_path, device=args.device,
                         torch_dtype=args.torch_dtype, max_shard_size=args.max_shard_size)
    except (ValueError, ImportError) as exc:  # CheckpointLayoutError is a ValueError
        print(f"llava.train.merge_lora: error: {exc}", file=sys.stderr)
        return 2
    print(f"merged checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

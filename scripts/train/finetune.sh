#!/usr/bin/env bash
# Fine-tune a LLaVA-NeXT checkpoint on one node with several GPUs (python -m llava.train.train under
# torchrun, one process per GPU; DeepSpeed as the config's `deepspeed:` says). Flags after the config
# override it. The script runs from the repository root, so paths in the config and in the flags are
# relative to it.
#
#   NUM_GPUS=8 bash scripts/train/finetune.sh configs/train/llava_ov_7b_aot_lora.yaml
#   NUM_GPUS=8 bash scripts/train/finetune.sh configs/train/llava_ov_7b_aot_full.yaml --num_train_epochs 2
#   NUM_GPUS=8 bash scripts/train/finetune.sh configs/train/llava_video_7b_aot_lora.yaml \
#       --resume_from_checkpoint True                                    # go on from the latest checkpoint-N
#   DRY_RUN=1 NUM_GPUS=8 bash scripts/train/finetune.sh CONFIG --max_steps 3   # print the command only
#
# runs (NUM_GPUS=8):
#   .venv/bin/python -m torch.distributed.run --nproc_per_node 8 -m llava.train.train CONFIG [--flag value ...]
# Environment (all optional):
#   NUM_GPUS=N          processes, one per GPU (default: GPUs visible, else 1)
#   MASTER_PORT=29500   rendezvous port (set it to run two trainings on one node)
#   PYTHON=.venv/bin/python   interpreter with this package and its train extra installed
#   DRY_RUN=1           print the command, run nothing
# Several nodes: scripts/train/finetune_multinode.sh. Flags, data format, DeepSpeed configs, LoRA and
# resuming: docs/training.md.
set -euo pipefail

usage="usage: [NUM_GPUS=N] bash scripts/train/finetune.sh CONFIG.yaml [--flag value ...]"
if [[ $# -lt 1 ]]; then
    echo "$usage" >&2
    exit 2
fi
config="$1"
shift
if [[ "$config" != *.yaml && "$config" != *.yml ]]; then
    echo "finetune.sh: train config '$config' is not a .yaml/.yml file; expected a config such as configs/train/llava_ov_7b_aot_lora.yaml" >&2
    echo "$usage" >&2
    exit 2
fi
if [[ ! -f "$config" ]]; then
    echo "finetune.sh: train config '$config': no such file; expected a YAML such as configs/train/llava_ov_7b_aot_lora.yaml" >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
config="${config#"$root"/}"   # relative to the repository root when inside it
cd "$root"

PYTHON="${PYTHON:-.venv/bin/python}"
source scripts/num_gpus.sh
if ! [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "finetune.sh: NUM_GPUS=$NUM_GPUS; expected a positive integer" >&2
    exit 2
fi

cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_GPUS")
[[ -n "${MASTER_PORT:-}" ]] && cmd+=(--master_port "$MASTER_PORT")
cmd+=(-m llava.train.train "$config" "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}" | sed 's/ $//'
    echo
    exit 0
fi
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"

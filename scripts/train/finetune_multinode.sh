#!/usr/bin/env bash
# Fine-tune a LLaVA-NeXT checkpoint on several nodes: run this script once on every node, with the same
# CONFIG, flags, NNODES, MASTER_ADDR and MASTER_PORT, and that node's NODE_RANK (0 on the node whose
# address is MASTER_ADDR). torchrun's static rendezvous: no hostfile, no ssh between the nodes. Flags
# after the config override it. The script runs from the repository root; keep the repository, the
# data and output_dir at the same paths on every node (output_dir on a shared filesystem, so that
# every rank's DeepSpeed shards land in one checkpoint-N for --resume_from_checkpoint).
#
#   # on node 0 (10.0.0.1) and on node 1, two nodes of 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NUM_GPUS=8 \
#       bash scripts/train/finetune_multinode.sh configs/train/llava_ov_7b_aot_full.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NUM_GPUS=8 \
#       bash scripts/train/finetune_multinode.sh configs/train/llava_ov_7b_aot_full.yaml
#   DRY_RUN=1 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 NUM_GPUS=8 \
#       bash scripts/train/finetune_multinode.sh CONFIG --max_steps 3     # print the command only
#
# runs:
#   .venv/bin/python -m torch.distributed.run --nnodes 2 --node_rank 0 --master_addr 10.0.0.1 \
#       --master_port 29500 --nproc_per_node 8 -m llava.train.train CONFIG [--flag value ...]
# Environment:
#   NNODES=N            number of nodes (required)
#   NODE_RANK=R         this node, 0 .. NNODES-1 (required)
#   MASTER_ADDR=HOST    address of node 0, reachable from every node (required)
#   MASTER_PORT=29500   a free port on node 0 (default 29500)
#   NUM_GPUS=N          processes on this node, one per GPU (default: GPUs visible, else 1)
#   PYTHON=.venv/bin/python   interpreter with this package and its train extra installed
#   DRY_RUN=1           print the command, run nothing
# One node: scripts/train/finetune.sh. Everything else: docs/training.md.
set -euo pipefail

usage="usage: NNODES=N NODE_RANK=R MASTER_ADDR=HOST [MASTER_PORT=29500] [NUM_GPUS=N] bash scripts/train/finetune_multinode.sh CONFIG.yaml [--flag value ...]"
fail() {
    echo "finetune_multinode.sh: $1" >&2
    exit 2
}
if [[ $# -lt 1 ]]; then
    echo "$usage" >&2
    exit 2
fi
config="$1"
shift
if [[ "$config" != *.yaml && "$config" != *.yml ]]; then
    fail "train config '$config' is not a .yaml/.yml file; expected a config such as configs/train/llava_ov_7b_aot_full.yaml"
fi
[[ -f "$config" ]] || fail "train config '$config': no such file; expected a YAML such as configs/train/llava_ov_7b_aot_full.yaml"

[[ -n "${NNODES:-}" ]] || fail "NNODES is not set; expected the number of nodes ($usage)"
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || fail "NNODES=$NNODES; expected a positive integer"
[[ -n "${NODE_RANK:-}" ]] || fail "NODE_RANK is not set; expected this node's rank, 0 .. $((NNODES - 1)) ($usage)"
[[ "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt "$NNODES" ]] || fail "NODE_RANK=$NODE_RANK; expected an integer in 0 .. $((NNODES - 1))"
[[ -n "${MASTER_ADDR:-}" ]] || fail "MASTER_ADDR is not set; expected the address of node 0 ($usage)"
MASTER_PORT="${MASTER_PORT:-29500}"
[[ "$MASTER_PORT" =~ ^[0-9]+$ ]] || fail "MASTER_PORT=$MASTER_PORT; expected a port number"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
config="${config#"$root"/}"   # relative to the repository root when inside it
cd "$root"

PYTHON="${PYTHON:-.venv/bin/python}"
source scripts/num_gpus.sh
[[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]] || fail "NUM_GPUS=$NUM_GPUS; expected a positive integer"

cmd=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK"
     --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --nproc_per_node "$NUM_GPUS"
     -m llava.train.train "$config" "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}" | sed 's/ $//'
    echo
    exit 0
fi
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"

# Sourced by the GPU launchers (scripts/eval/_run_table.sh, scripts/train/finetune*.sh): NUM_GPUS, when
# unset, is the number of GPUs visible (CUDA_VISIBLE_DEVICES, else nvidia-smi), at least 1.
if [[ -z "${NUM_GPUS:-}" ]]; then
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        NUM_GPUS=$(awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES")
    elif command -v nvidia-smi >/dev/null 2>&1; then
        NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    fi
    [[ "${NUM_GPUS:-0}" -ge 1 ]] || NUM_GPUS=1
fi

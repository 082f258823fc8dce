#!/usr/bin/env bash
# OctoThinker stage 1 (Stable), Llama-3.2-3B: 50,000 steps x 512 x 8,192 = 209.7B tokens at a constant LR 2e-5.
# Layout: 8 nodes x 8 H100 = 64 GPUs, TP 1, DP 64 (distributed optimizer), micro-batch 1 -> 8 accumulation steps.
# Estimate: 2.77e10 FLOPs/token -> ~4,080 GPU-hours at 40% MFU, ~64 h on 64 GPUs (16 four-hour jobs, requeued).
# Before: octo convert --from hf --to mcore --input Llama-3.2-3B --output "$OCTO_CKPT/llama-3.2-3b"
set -euo pipefail
# shellcheck source=examples/common.sh
source "$(dirname "$0")/common.sh"

octo launch slurm --recipe octothinker-3b-stable --nodes 8 --gpus-per-node 8 \
    --run-dir "$OCTO_RUNS/3b-stable" "${SLURM_FLAGS[@]}" "$@" \
    checkpoint.load="$OCTO_CKPT/llama-3.2-3b"

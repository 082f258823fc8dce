#!/usr/bin/env bash
# OctoThinker stage 1 (Stable), Llama-3.2-1B: 50,000 steps x 512 x 8,192 = 209.7B tokens at a constant LR 5e-5.
# Layout: 4 nodes x 8 H100 = 32 GPUs, TP 1, DP 32 (distributed optimizer), micro-batch 1 -> 16 accumulation steps;
# FP8 on Hopper (precision.fp8=auto). Why: docs/SCALING.md.
# Estimate: 1.06e10 FLOPs/token -> ~1,570 GPU-hours at 40% MFU, ~49 h on 32 GPUs (12-13 four-hour jobs, requeued).
# Before: octo convert --from hf --to mcore --input Llama-3.2-1B --output "$OCTO_CKPT/llama-3.2-1b"
set -euo pipefail
# shellcheck source=examples/common.sh
source "$(dirname "$0")/common.sh"

octo launch slurm --recipe octothinker-1b-stable --nodes 4 --gpus-per-node 8 \
    --run-dir "$OCTO_RUNS/1b-stable" "${SLURM_FLAGS[@]}" "$@" \
    checkpoint.load="$OCTO_CKPT/llama-3.2-1b"

#!/usr/bin/env bash
# OctoThinker stage 1 (Stable), Llama-3.1-8B: 50,000 steps x 512 x 8,192 = 209.7B tokens at a constant LR 1e-5.
# Layout: 16 nodes x 8 H100 = 128 GPUs, TP 1, DP 128 (distributed optimizer), micro-batch 1 -> 4 accumulation
# steps, FP8 (Hopper current scaling) with full recomputation of 5 layers, as Megatron-Bridge's H100 Llama-3-8B
# FP8 recipe; in BF16 add parallel.cp=2 perf.recompute=null (DP 64). Why: docs/SCALING.md.
# Estimate: 5.79e10 FLOPs/token -> ~8,530 GPU-hours at 40% MFU, ~67 h on 128 GPUs. The signal comes 10 minutes
# before the time limit: an 8B save (bf16 weights, fp32 main weights and Adam moments, ~112 GB) may need more
# than the default 5.
# Before: octo convert --from hf --to mcore --input Llama-3.1-8B --output "$OCTO_CKPT/llama-3.1-8b"
set -euo pipefail
# shellcheck source=examples/common.sh
source "$(dirname "$0")/common.sh"

octo launch slurm --recipe octothinker-8b-stable --nodes 16 --gpus-per-node 8 --signal-lead 600 \
    --run-dir "$OCTO_RUNS/8b-stable" "${SLURM_FLAGS[@]}" "$@" \
    checkpoint.load="$OCTO_CKPT/llama-3.1-8b"

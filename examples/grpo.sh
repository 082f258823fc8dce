#!/usr/bin/env bash
# OctoThinker stage 3: "Zero" GRPO on a decayed 3B model, MATH8K prompts, 128 prompts x 16 responses a step,
# 400 steps, actor LR 1e-6, responses up to 4,096 tokens (recipe octothinker-3b-grpo), or the long-CoT schedule
# 2,048 -> 4,096 -> 8,192 tokens (octothinker-3b-grpo-long, for the Long branch).
#   examples/grpo.sh [long|short|hybrid] [octo launch flags] [key=value ...]     (default: long)
# Layout: 1 node x 8 H100, TP 1, DP 8, vLLM colocated with the trainer. A step generates up to 2,048 x 4,096 =
# 8.4M response tokens; its time is set by the longest responses, so no estimate is given here: the run's
# metrics.jsonl reports the time per phase.
set -euo pipefail
# shellcheck source=examples/common.sh
source "$(dirname "$0")/common.sh"

BRANCH="long"
if [ $# -gt 0 ] && [[ "$1" != -* && "$1" != *=* ]]; then BRANCH="$1"; shift; fi
case "$BRANCH" in
    long) RECIPE=octothinker-3b-grpo-long ;;
    short|hybrid) RECIPE=octothinker-3b-grpo ;;
    *) echo "grpo.sh: error: BRANCH '$BRANCH' is not one of long, short, hybrid" >&2; exit 2 ;;
esac

octo launch slurm --command rl --recipe "$RECIPE" --nodes 1 --gpus-per-node 8 \
    --run-dir "$OCTO_RUNS/3b-grpo-$BRANCH" "${SLURM_FLAGS[@]}" "$@" \
    rl.init="$OCTO_RUNS/3b-decay-$BRANCH"

#!/usr/bin/env bash
# OctoThinker stage 2 (Decay): one branch from the newest stable checkpoint of a size. 5,000 steps x 512 x 8,192
# = 21.0B tokens, cosine from the stable LR to a tenth of it, on the branch's mixture.
#   examples/decay.sh SIZE BRANCH [octo launch flags] [key=value ...]
#   SIZE: 1b | 3b | 8b     BRANCH: long | short | hybrid
# Layout: the size's stable layout (1b: 4 nodes, 3b: 8, 8b: 16, all TP 1). Estimate at 40% MFU: 1b ~160
# GPU-hours (~5 h on 32 GPUs), 3b ~410 (~6.4 h on 64), 8b ~850 (~6.7 h on 128), per branch.
# Branching reads $OCTO_RUNS/SIZE-stable and never writes to it; the three branches can run at the same time.
set -euo pipefail
# shellcheck source=examples/common.sh
source "$(dirname "$0")/common.sh"

if [ $# -lt 2 ]; then
    echo "usage: examples/decay.sh SIZE BRANCH [flags] [key=value ...]  (SIZE: 1b|3b|8b, BRANCH: long|short|hybrid)" >&2
    exit 2
fi
SIZE="$1"
BRANCH="$2"
shift 2
case "$SIZE" in
    1b) NODES=4; LEAD=300 ;;
    3b) NODES=8; LEAD=300 ;;
    8b) NODES=16; LEAD=600 ;;
    *) echo "decay.sh: error: SIZE '$SIZE' is not one of 1b, 3b, 8b" >&2; exit 2 ;;
esac
case "$BRANCH" in
    long|short|hybrid) ;;
    *) echo "decay.sh: error: BRANCH '$BRANCH' is not one of long, short, hybrid" >&2; exit 2 ;;
esac

octo launch slurm --recipe "octothinker-$SIZE-decay-$BRANCH" --nodes "$NODES" --gpus-per-node 8 \
    --signal-lead "$LEAD" --run-dir "$OCTO_RUNS/$SIZE-decay-$BRANCH" "${SLURM_FLAGS[@]}" "$@" \
    checkpoint.branch_from="$OCTO_RUNS/$SIZE-stable"

#!/usr/bin/env bash
# OctoThinker stages 1 and 2 as one chain of Slurm jobs, submitted at once: the stable stage of a size, then its three
# decay branches, each held by --dependency=afterok on the stable job. Slurm starts the branches only once the stable
# job has completed successfully (after all its requeues: a requeued job is pending again, not completed), and
# --kill-on-invalid-dep=yes cancels them if it fails instead of leaving them pending forever. Each branch starts
# from the newest complete checkpoint of $OCTO_RUNS/SIZE-stable.
#   examples/chain.sh SIZE [octo launch flags] [key=value ...]      SIZE: 1b | 3b | 8b
# Flags and overrides go to all four jobs (flags first). With --dry-run the four scripts are printed, the branches
# with the placeholder dependency afterok:STABLE_JOB_ID.
set -euo pipefail
HERE="$(dirname "$0")"

if [ $# -lt 1 ]; then
    echo "usage: examples/chain.sh SIZE [flags] [key=value ...]  (SIZE: 1b|3b|8b)" >&2
    exit 2
fi
SIZE="$1"
shift
case "$SIZE" in
    1b|3b|8b) ;;
    *) echo "chain.sh: error: SIZE '$SIZE' is not one of 1b, 3b, 8b" >&2; exit 2 ;;
esac
DRY=0
for arg in "$@"; do if [ "$arg" = --dry-run ]; then DRY=1; fi; done

if [ "$DRY" = 1 ]; then
    "$HERE/$SIZE-stable.sh" "$@"
    STABLE=STABLE_JOB_ID
else
    STABLE="$("$HERE/$SIZE-stable.sh" --parsable "$@")"
    echo "stable: job $STABLE"
fi
for branch in long short hybrid; do
    if [ "$DRY" = 1 ]; then
        "$HERE/decay.sh" "$SIZE" "$branch" --dependency "afterok:$STABLE" --sbatch-arg=--kill-on-invalid-dep=yes "$@"
    else
        id="$("$HERE/decay.sh" "$SIZE" "$branch" --parsable --dependency "afterok:$STABLE" \
            --sbatch-arg=--kill-on-invalid-dep=yes "$@")"
        echo "decay-$branch: job $id, starts after job $STABLE has completed"
    fi
done

# shellcheck shell=bash
# Settings shared by the example launch scripts (sourced, not run). Set any of them in the environment.
#   OCTO_IMAGE      container for pyxis: the .sqsh from `containers/build.sh --sqsh`, or a registry URI
#   OCTO_RUNS       where run directories go (one per stage; a requeued job resumes its own)
#   OCTO_CKPT       converted base models (octo convert --from hf --to mcore ...)
#   OCTO_DATA       preprocessed corpora as the mixtures expect them (see megatron_octo/config/mixtures/)
#   OCTO_ACCOUNT, OCTO_PARTITION, OCTO_TIME   Slurm account, partition and per-job time limit
# Flags and key=value overrides given to an example script are passed on to `octo launch slurm` (flags first,
# e.g. `examples/3b-stable.sh --dry-run train.iters=100`).

export OCTO_IMAGE="${OCTO_IMAGE:-$PWD/megatron-octo.sqsh}"
export OCTO_RUNS="${OCTO_RUNS:-$PWD/runs}"
export OCTO_CKPT="${OCTO_CKPT:-$PWD/checkpoints}"
export OCTO_DATA="${OCTO_DATA:-$PWD/data}"
OCTO_TIME="${OCTO_TIME:-04:00:00}"

# shellcheck disable=SC2034  # used by the scripts that source this file
SLURM_FLAGS=(--container "$OCTO_IMAGE" --time "$OCTO_TIME")
if [ -n "${OCTO_ACCOUNT:-}" ]; then SLURM_FLAGS+=(--account "$OCTO_ACCOUNT"); fi
if [ -n "${OCTO_PARTITION:-}" ]; then SLURM_FLAGS+=(--partition "$OCTO_PARTITION"); fi

#!/bin/bash
# The PPO critic server (het group 0 of launch_ppo.sbatch): NeMo-Aligner's serve_ppo_critic.py with critic.yaml, run
# through megatron_octo.serve.aligner_adapter, whose fix_critic_server makes its separate-reward mode
# (combine_rm_and_critic_server: False, rewards from `octo serve reward`) work: NeMo-Aligner 0.7 fails at its first
# inference in that mode.
# Needs GPFS (NeMo-Aligner source), HERE (this directory), CRITIC_NEMO, CRITIC_PORT, RESULTS_DIR.
set -euo pipefail
: "${GPFS:?}" "${HERE:?}" "${CRITIC_NEMO:?}" "${CRITIC_PORT:?}" "${RESULTS_DIR:?}"
# An exported checkpoint names its bundled tokenizer by the absolute path it was written to; point NeMo at the
# tokenizer folder where the checkpoint is now (a .nemo file keeps its own).
TOKENIZER_OVERRIDE=()
if [ -d "$CRITIC_NEMO/tokenizer" ]; then TOKENIZER_OVERRIDE=("++model.tokenizer.type=$CRITIC_NEMO/tokenizer"); fi
cd "$GPFS"
export PYTHONPATH="$GPFS:${PYTHONPATH:-}" HYDRA_FULL_ERROR=1
exec python -u -m megatron_octo.serve.aligner_adapter "$GPFS/examples/nlp/gpt/serve_ppo_critic.py" \
    --config-path "$HERE" --config-name critic "hydra.searchpath=[file://$GPFS/examples/nlp/gpt/conf]" \
    trainer.devices=8 trainer.num_nodes="${SLURM_JOB_NUM_NODES_HET_GROUP_0:-1}" \
    trainer.ppo.port="$CRITIC_PORT" \
    pretrained_checkpoint.restore_from_path="$CRITIC_NEMO" \
    ${TOKENIZER_OVERRIDE[@]+"${TOKENIZER_OVERRIDE[@]}"} \
    exp_manager.explicit_log_dir="$RESULTS_DIR/critic"

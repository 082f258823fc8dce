#!/bin/bash
# The PPO actor with its vLLM generation (het group 2 of launch_ppo.sbatch): NeMo-Aligner's unchanged
# train_gpt_ppo_actor.py, run through megatron_octo.serve.aligner_adapter, which puts vLLM where the actor would
# use TensorRT-LLM (actor.yaml turns that path on); each data-parallel rank generates with its own engine on its GPU
# and refits it from the actor's weights in memory before every rollout.
# Needs GPFS, HERE, ACTOR_NEMO, HF_MODEL, PROMPTS, VALIDATION, CRITIC_HOST/PORT, REWARD_HOST/PORT, RESULTS_DIR.
set -euo pipefail
: "${GPFS:?}" "${HERE:?}" "${ACTOR_NEMO:?}" "${HF_MODEL:?}" "${PROMPTS:?}" "${VALIDATION:?}" "${RESULTS_DIR:?}"
: "${CRITIC_HOST:?}" "${CRITIC_PORT:?}" "${REWARD_HOST:?}" "${REWARD_PORT:?}"
# The reward server must answer before the actor starts (it is started beside the critic, 30 s earlier).
if ! timeout "${REWARD_WAIT:-300}" bash -c "until (exec 3<>/dev/tcp/$REWARD_HOST/$REWARD_PORT) 2>/dev/null; do sleep 5; done"; then
    echo "actor.sh: no reward server at $REWARD_HOST:$REWARD_PORT after ${REWARD_WAIT:-300} s: see $RESULTS_DIR/reward" >&2
    exit 2
fi
# An exported checkpoint names its bundled tokenizer by the absolute path it was written to; point NeMo at the
# tokenizer folder where the checkpoint is now (a .nemo file keeps its own).
TOKENIZER_OVERRIDE=()
if [ -d "$ACTOR_NEMO/tokenizer" ]; then TOKENIZER_OVERRIDE=("++model.tokenizer.type=$ACTOR_NEMO/tokenizer"); fi
cd "$GPFS"
export PYTHONPATH="$GPFS:${PYTHONPATH:-}" HYDRA_FULL_ERROR=1
exec python -u -m megatron_octo.serve.aligner_adapter "$GPFS/examples/nlp/gpt/train_gpt_ppo_actor.py" \
    --config-path "$HERE" --config-name actor "hydra.searchpath=[file://$GPFS/examples/nlp/gpt/conf]" \
    trainer.devices=8 trainer.num_nodes="${ACTOR_NODES:-1}" \
    pretrained_checkpoint.restore_from_path="$ACTOR_NEMO" \
    "++model.data.data_prefix={train: [$PROMPTS], validation: [$VALIDATION], test: [$VALIDATION]}" \
    model.ppo.vllm.model_dir="$HF_MODEL" \
    remote_critic_rm.critic.ip="$CRITIC_HOST" remote_critic_rm.critic.port="$CRITIC_PORT" \
    remote_critic_rm.reward_model.ip="$REWARD_HOST" remote_critic_rm.reward_model.port="$REWARD_PORT" \
    ${TOKENIZER_OVERRIDE[@]+"${TOKENIZER_OVERRIDE[@]}"} \
    exp_manager.explicit_log_dir="$RESULTS_DIR/actor"

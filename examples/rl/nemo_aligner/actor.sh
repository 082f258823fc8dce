#!/bin/bash
# The PPO actor with its vLLM generation (het group 2 of launch_ppo.sbatch): NeMo-Aligner's unchanged
# train_gpt_ppo_actor.py, run through megatron_octo.serve.aligner_adapter, which puts vLLM where the actor would
# use TensorRT-LLM (actor.yaml turns that path on); each data-parallel rank generates with its own engine on its GPU
# and refits it from the actor's weights in memory before every rollout.
# Needs GPFS, HERE, ACTOR_NEMO, HF_MODEL, PROMPTS, VALIDATION, CRITIC_HOST/PORT, REWARD_HOST/PORT, RESULTS_DIR.
set -euo pipefail
: "${GPFS:?}" "${HERE:?}" "${ACTOR_NEMO:?}" "${HF_MODEL:?}" "${PROMPTS:?}" "${VALIDATION:?}" "${RESULTS_DIR:?}"
: "${CRITIC_HOST:?}" "${CRITIC_PORT:?}" "${REWARD_HOST:?}" "${REWARD_PORT:?}"
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
    exp_manager.explicit_log_dir="$RESULTS_DIR/actor"

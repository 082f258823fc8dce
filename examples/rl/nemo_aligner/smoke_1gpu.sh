#!/bin/bash
# One-GPU smoke run of the NeMo-Aligner hand-off: the two PPO steps and two REINFORCE steps that
# tests/aligner/test_ppo_step.py takes on CPU, here with NeMo-Aligner's own scripts, PyTriton servers and vLLM
# generation, in the aligner image (containers/Dockerfile.aligner), on a tiny policy (tests/aligner/make_ppo_fixture.py:
# a 2-layer Llama that answers "What is a+b?" with one of three boxed numbers).
#
#   bash smoke_1gpu.sh prepare WORK   # with the main stack (make venv, or the main image): policy, exports, prompts
#   bash smoke_1gpu.sh run WORK       # in the aligner image on one GPU, repository at OCTO_REPO (default: here)
#
# run starts the reward server (`octo serve reward`) and the critic (serve_ppo_critic.py through the adapter's
# launcher, which also fixes its separate-reward mode) in the background, waits for both ports, runs the PPO actor
# (train_gpt_ppo_actor.py with actor.yaml, vLLM generation) for 2 steps, then the REINFORCE actor (reinforce.yaml)
# for 2 steps, and checks what their logs and checkpoints show: both reach step 2 and save, rewards vary, some
# samples end properly, the critic trained. Exit 0 and "smoke_1gpu: PASS" when all hold; 2 on a missing input.
# GPFS: NeMo-Aligner's source tree (default /opt/NeMo-Aligner); REWARD_PORT / CRITIC_PORT (5555 / 5556);
# SERVER_WAIT: seconds to wait for the servers (300).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OCTO_REPO="${OCTO_REPO:-$(cd "$HERE/../../.." && pwd)}"
GPFS="${GPFS:-/opt/NeMo-Aligner}"
REWARD_PORT="${REWARD_PORT:-5555}"
CRITIC_PORT="${CRITIC_PORT:-5556}"

usage() {
    echo "usage: smoke_1gpu.sh prepare|run WORK" >&2
    exit 2
}
[ $# -eq 2 ] || usage
MODE="$1"
mkdir -p "$2"
WORK="$(cd "$2" && pwd)"
export PYTHONPATH="$OCTO_REPO:$GPFS:${PYTHONPATH:-}" HYDRA_FULL_ERROR=1

if [ "$MODE" = prepare ]; then
    cd "$OCTO_REPO"
    exec python -m tests.aligner.make_ppo_fixture "$WORK"
fi
[ "$MODE" = run ] || usage
for input in hf actor critic prompts.jsonl answers.jsonl; do
    if [ ! -e "$WORK/$input" ]; then
        echo "smoke_1gpu.sh: $WORK/$input is missing: run 'smoke_1gpu.sh prepare $WORK' with the main stack first" >&2
        exit 2
    fi
done
if [ ! -f "$GPFS/examples/nlp/gpt/train_gpt_ppo_actor.py" ]; then
    echo "smoke_1gpu.sh: no NeMo-Aligner scripts under GPFS=$GPFS: set GPFS to its source tree" >&2
    exit 2
fi
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
SEARCH="hydra.searchpath=[file://$GPFS/examples/nlp/gpt/conf]"
DATA="{train: [$WORK/prompts.jsonl], validation: [$WORK/prompts.jsonl], test: [$WORK/prompts.jsonl]}"
# The tiny run's sizes, the same as the CPU test's (tests/aligner/ppo_run.py): 4 rollouts a step, one model batch,
# 6 response tokens; the answer's closing brace is the end string. Precision, optimizer and vLLM settings stay the
# configs' (bf16, distributed Adam, sleep mode): the GPU path as a real run takes it.
COMMON=(trainer.devices=1 trainer.num_nodes=1 model.encoder_seq_length=256 model.global_batch_size=4 "++model.data.data_prefix=$DATA"
        "++model.tokenizer.type=$WORK/actor/tokenizer")
CRITIC_ARGS=(--config-path "$HERE" --config-name critic "$SEARCH" trainer.devices=1 trainer.num_nodes=1
             model.encoder_seq_length=256
             model.global_batch_size=4 model.micro_batch_size=1 model.forward_micro_batch_size=2
             trainer.ppo.port="$CRITIC_PORT" pretrained_checkpoint.restore_from_path="$WORK/critic"
             "++model.tokenizer.type=$WORK/critic/tokenizer" exp_manager.explicit_log_dir="$RESULTS/critic")
PPO_ARGS=(--config-path "$HERE" --config-name actor "$SEARCH" "${COMMON[@]}"
          trainer.ppo.max_steps=2 trainer.ppo.val_check_interval=2 trainer.ppo.trt_llm.max_input_len=64
          trainer.ppo.initial_policy_kl_penalty=0.01 model.ppo.num_rollout_samples=4
          model.ppo.rollout_micro_batch_size=2 model.ppo.forward_micro_batch_size=2 model.ppo.num_val_samples=2
          model.ppo.val_rollout_micro_batch_size=2 model.ppo.length_params.max_length=6
          "model.ppo.sampling_params.end_strings=[\"}\"]" model.ppo.vllm.model_dir="$WORK/hf"
          model.ppo.vllm.gpu_memory_utilization=0.2 model.optim.lr=1e-3
          model.optim.sched.min_lr=1e-3 remote_critic_rm.pad_to_length=256
          remote_critic_rm.critic.port="$CRITIC_PORT" remote_critic_rm.reward_model.port="$REWARD_PORT"
          pretrained_checkpoint.restore_from_path="$WORK/actor" exp_manager.explicit_log_dir="$RESULTS/ppo")
REINFORCE_ARGS=(--config-path "$HERE" --config-name reinforce "$SEARCH" "${COMMON[@]}"
                trainer.reinforce.max_steps=2 trainer.reinforce.val_check_interval=2
                trainer.reinforce.trt_llm.max_input_len=64 trainer.reinforce.initial_policy_kl_penalty=0.01
                trainer.reinforce.num_rollouts_per_prompt=2 model.reinforce.num_rollout_samples=2
                model.reinforce.rollout_micro_batch_size=2 model.reinforce.forward_micro_batch_size=2
                model.reinforce.num_val_samples=2 model.reinforce.val_rollout_micro_batch_size=2
                model.reinforce.length_params.max_length=6 "model.reinforce.sampling_params.end_strings=[\"}\"]"
                model.reinforce.vllm.model_dir="$WORK/hf" model.reinforce.vllm.gpu_memory_utilization=0.2 model.optim.lr=1e-3 model.optim.sched.min_lr=1e-3
                remote_rm.pad_to_length=256 remote_rm.reward_model.port="$REWARD_PORT"
                pretrained_checkpoint.restore_from_path="$WORK/actor" exp_manager.explicit_log_dir="$RESULTS/reinforce")

SERVERS=()
stop_servers() {
    for pid in ${SERVERS[@]+"${SERVERS[@]}"}; do kill "$pid" 2>/dev/null || true; done
}
trap stop_servers EXIT
cd "$OCTO_REPO"
python -m megatron_octo serve reward --answers "$WORK/answers.jsonl" --tokenizer "$WORK/hf" \
    --response-marker "A:" --port "$REWARD_PORT" > "$RESULTS/reward.log" 2>&1 &
SERVERS+=("$!")
python -u -m megatron_octo.serve.aligner_adapter "$GPFS/examples/nlp/gpt/serve_ppo_critic.py" "${CRITIC_ARGS[@]}" \
    > "$RESULTS/critic.log" 2>&1 &
SERVERS+=("$!")
for port in "$REWARD_PORT" "$CRITIC_PORT"; do
    if ! timeout "${SERVER_WAIT:-300}" bash -c "until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 5; done"; then
        echo "smoke_1gpu.sh: nothing listens on port $port after ${SERVER_WAIT:-300} s: see $RESULTS/reward.log and $RESULTS/critic.log" >&2
        exit 1
    fi
done
python -u -m megatron_octo.serve.aligner_adapter "$GPFS/examples/nlp/gpt/train_gpt_ppo_actor.py" "${PPO_ARGS[@]}" \
    2>&1 | tee "$RESULTS/ppo.log"
python -u -m megatron_octo.serve.aligner_adapter "$GPFS/examples/nlp/gpt/train_gpt_reinforce_actor.py" \
    "${REINFORCE_ARGS[@]}" 2>&1 | tee "$RESULTS/reinforce.log"
python "$HERE/smoke_check.py" "$RESULTS"

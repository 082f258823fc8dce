#!/bin/bash
# The math reward server (het group 1 of launch_ppo.sbatch): `octo serve reward` with NeMo-Aligner's reward-model
# transport, bound to all interfaces so the actor's nodes reach it. Needs PROMPTS (text + answer JSONL, also the
# actor's training prompts), HF_MODEL (its tokenizer decodes the actor's tokens), REWARD_PORT.
set -euo pipefail
: "${PROMPTS:?}" "${HF_MODEL:?}" "${REWARD_PORT:?}"
ANSWERS="$PROMPTS"
if [ -n "${VALIDATION:-}" ] && [ "$VALIDATION" != "$PROMPTS" ]; then
    # validation rollouts are scored too: one answer file holding both prompt sets
    ANSWERS="$(mktemp --suffix .jsonl)"
    cat "$PROMPTS" "$VALIDATION" > "$ANSWERS"
fi
exec python -m megatron_octo serve reward --answers "$ANSWERS" --tokenizer "$HF_MODEL" \
    --host 0.0.0.0 --port "$REWARD_PORT" --timeout 2

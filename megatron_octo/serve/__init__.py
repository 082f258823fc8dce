"""Servers and services the RL stages run beside a trainer.

- ``reward_server``: the rule-based math reward behind NeMo-Aligner's reward-model transport (PyTriton), so
  NeMo-Aligner's PPO actor scores rollouts with ``megatron_octo.rl.reward`` instead of a reward model.
- ``generation``: a vLLM generation service for an RL actor (generate, in-memory refit, sleep/wake, shutdown).
- ``aligner_adapter``: NeMo-Aligner's PPO actor generating through that service instead of TensorRT-LLM, installed
  by a launcher without patching NeMo-Aligner's files.

Nothing here is imported by the training stack; each module imports its heavy dependencies (PyTriton, vLLM,
NeMo-Aligner) only when used.
"""

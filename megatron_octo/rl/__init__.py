"""Reinforcement learning on math (GRPO / PPO). This package currently holds the rule-based reward
(``megatron_octo.rl.reward``): ``math_reward``, ``math_rewards`` and ``MathReward``."""

"""NeMo-Aligner's PPO critic made from a policy: the plan and rows ``octo convert --to nemo --critic`` writes.

NeMo-Aligner 0.7's critic server (``serve_ppo_critic.py``) restores ``MegatronGPTCriticModel`` strictly. Its
network is ``GPTRewardModel``: the policy's GPTModel with the output layer always untied
(``share_embeddings_and_output_weights`` is forced to False) plus ``rm_head``, a ``RowParallelLinear`` from the
hidden size to ``regression.num_attributes`` outputs with a bias, kept in ``force_head_dtype`` (fp32). Its sharded
state dict therefore asks for, besides the trunk::

    model.output_layer.weight   [padded_vocab, hidden]   (a tied policy: a copy of the embedding)
    model.rm_head.weight        [num_attributes, hidden] (sharded along the hidden axis for TP; stored whole)
    model.rm_head.bias          [num_attributes]

The value head starts at zero, so the fresh critic predicts 0 for every token (the same start as ``octo rl``'s
critic, ``rl.critic``): GAE's first advantages are then the rewards, and the critic learns from there. The config
fields the critic reads are ``critic_model_fields``; the critic YAML of a run (``gpt_ppo_critic.yaml``) may still
override them at load time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert.layout import Entry, McoreTensor, WeightPlan, build_plan
from megatron_octo.models.shapes import shape

CRITIC_TARGET = "nemo_aligner.models.nlp.gpt.megatron_gpt_critic.MegatronGPTCriticModel"
"""The class NeMo-Aligner restores a critic checkpoint as."""
NUM_ATTRIBUTES = 1
"""Outputs of the value head: one value per token (``regression.num_attributes``)."""
HEAD_DTYPE = torch.float32
"""NeMo-Aligner's default ``force_head_dtype``: the head's parameters are fp32 whatever the trunk's precision."""
RM_HEAD_WEIGHT = "rm_head.weight"
RM_HEAD_BIAS = "rm_head.bias"
EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"


def critic_plan(cfg: ModelConfig, tp: int) -> Tuple[ModelConfig, WeightPlan]:
    """The critic's model config (the policy's, output layer untied) and its weight plan: the policy's entries
    with ``output_layer.weight`` and the two ``rm_head`` tensors (no HF counterpart)."""
    critic_cfg = replace(cfg, tie_word_embeddings=False)
    plan = build_plan(critic_cfg, tp)
    head = [
        Entry(McoreTensor(RM_HEAD_WEIGHT, None, (NUM_ATTRIBUTES, shape(cfg).hidden_size)), (), ()),
        Entry(McoreTensor(RM_HEAD_BIAS, None, (NUM_ATTRIBUTES,)), (), ()),
    ]
    return critic_cfg, WeightPlan(cfg=critic_cfg, padded_vocab=plan.padded_vocab, entries=plan.entries + head)


class CriticRows:
    """The rows of a critic checkpoint, served from the policy's rows: the output layer from the policy's own
    (or, tied, from its embedding), the value head as zeros, everything else unchanged."""

    def __init__(self, policy_rows, policy_cfg: ModelConfig, plan: WeightPlan):
        self.rows = policy_rows
        self.tied = bool(policy_cfg.tie_word_embeddings)
        by_key = {e.mcore.key: e.mcore for e in plan.entries if e.mcore.layer is None}
        self.embedding = by_key[EMBEDDING]

    def _policy_tensor(self, t: McoreTensor) -> McoreTensor:
        if self.tied and t.key == OUTPUT_LAYER:
            return self.embedding
        return t

    def dtype(self, t: McoreTensor) -> torch.dtype:
        if t.key in (RM_HEAD_WEIGHT, RM_HEAD_BIAS):
            return HEAD_DTYPE
        return self.rows.dtype(self._policy_tensor(t))

    def blocks(self, t: McoreTensor, max_bytes: int) -> List[Tuple[int, int]]:
        if t.key in (RM_HEAD_WEIGHT, RM_HEAD_BIAS):
            return [(0, t.shape[0])]
        return self.rows.blocks(self._policy_tensor(t), max_bytes)

    def read(self, t: McoreTensor, start: int, stop: int) -> torch.Tensor:
        if t.key in (RM_HEAD_WEIGHT, RM_HEAD_BIAS):
            return torch.zeros((stop - start, *t.shape[1:]), dtype=HEAD_DTYPE)
        return self.rows.read(self._policy_tensor(t), start, stop)


def critic_model_fields() -> dict:
    """What ``MegatronGPTCriticModel`` reads from ``model_config.yaml`` beyond a GPT's fields (NeMo-Aligner 0.7's
    ``gpt_ppo_critic.yaml`` values): a value per token, no pooling, an fp32 head, one unweighted attribute."""
    return {
        "target": CRITIC_TARGET,
        "share_embeddings_and_output_weights": False,
        "output_sequence": True,
        "use_avg_pool": False,
        "force_head_dtype": "float32",
        "reward_standardization": {"enable": False, "mean": None, "std": None},
        "regression": {"num_attributes": NUM_ATTRIBUTES, "merge_attributes": False, "attribute_weights": None},
    }

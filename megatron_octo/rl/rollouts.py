"""One step's rollouts on a rollout rank: generate, score, compute advantages, and lay the result out as
padded tensors that every rank of the model-parallel group receives."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist

from megatron_octo.rl import algorithms as alg
from megatron_octo.rl.engines import RolloutEngine
from megatron_octo.rl.policy import MicroBatch

EXAMPLES_PER_STEP = 4
"""Responses of each step written to ``RUN_DIR/samples.jsonl`` (by the main rank): what the policy says."""
RewardFn = Callable[[Sequence[str], Sequence[str]], List[float]]
"""(responses, gold answers) -> one reward per response."""


@dataclass
class Rollouts:
    """The responses of one data-parallel replica's prompts, ``n`` consecutive responses per prompt."""

    tokens: List[List[int]]
    """prompt + response token ids."""
    prompt_lens: List[int]
    engine_logprobs: List[List[float]]
    """The engine's log-prob of each response token."""
    rewards: List[float]
    truncated: List[bool]
    """Cut at the response length limit."""
    advantages: List[float]
    examples: List[dict] = field(default_factory=list)
    """A few (prompt, response, gold, reward) records, for ``RUN_DIR/samples.jsonl``."""

    @property
    def response_lens(self) -> List[int]:
        return [len(t) - p for t, p in zip(self.tokens, self.prompt_lens)]


def collect(engine: RolloutEngine, problems, *, n: int, temperature: float, top_p: float, max_tokens: int,
            stop: Sequence[str], seed: int, reward_fn: RewardFn, scale_by_std: bool, phase=None) -> Rollouts:
    """Sample ``n`` responses for each problem, score them and compute GRPO advantages (per group of ``n``);
    ``phase(name)`` (a context manager factory, e.g. ``loop.Phases``) times generate / reward / advantages."""
    phase = phase or (lambda name: nullcontext())
    with phase("generate"):
        groups = engine.generate([p.token_ids for p in problems], n=n, temperature=temperature, top_p=top_p,
                                 max_tokens=max_tokens, stop=stop, seed=seed)
    tokens, prompt_lens, logprobs, texts, golds, truncated = [], [], [], [], [], []
    for problem, samples in zip(problems, groups):
        for s in samples:
            tokens.append(list(problem.token_ids) + list(s.token_ids))
            prompt_lens.append(len(problem.token_ids))
            logprobs.append(list(s.logprobs))
            texts.append(s.text)
            golds.append(problem.answer)
            truncated.append(s.finish_reason == "length")
    with phase("reward"):
        rewards = [float(r) for r in reward_fn(texts, golds)]
    with phase("advantages"):
        advantages = alg.grpo_advantages(torch.tensor(rewards), n, scale_by_std=scale_by_std).tolist()
    examples = [{"prompt": problems[i // n].text, "response": texts[i], "gold": golds[i], "reward": rewards[i]}
                for i in range(min(len(texts), EXAMPLES_PER_STEP))]
    return Rollouts(tokens, prompt_lens, logprobs, rewards, truncated, advantages, examples)


def share(rollouts, mp_group) -> Rollouts:
    """Broadcast the rollout rank's ``Rollouts`` (model-parallel rank 0) to the rest of its group."""
    if dist.get_world_size(mp_group) == 1:
        return rollouts
    box = [rollouts]
    dist.broadcast_object_list(box, src=dist.get_global_rank(mp_group, 0), group=mp_group)
    return box[0]


def _micro_batch(r: Rollouts, rows: Sequence[int], length: int, pad_id: int, device: torch.device) -> MicroBatch:
    """The responses ``rows`` right-padded to ``length`` tokens, with their engine log-probs on the label grid."""
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length - 1))
    engine_lp = torch.zeros((len(rows), length - 1))
    for i, j in enumerate(rows):
        seq, p, lp = r.tokens[j], r.prompt_lens[j], r.engine_logprobs[j]
        tokens[i, :len(seq)] = torch.tensor(seq)
        mask[i, p - 1:len(seq) - 1] = 1.0  # label t is token t + 1: responses start at label p - 1
        engine_lp[i, p - 1:p - 1 + len(lp)] = torch.tensor(lp)
    adv = torch.tensor([r.advantages[j] for j in rows])
    rewards = torch.tensor([r.rewards[j] for j in rows])
    return MicroBatch(tokens=tokens.to(device), mask=mask.to(device), advantages=adv.to(device),
                      rewards=rewards.to(device), engine_logprobs=engine_lp.to(device), rows=list(rows))


def micro_batches(r: Rollouts, indices: Sequence[int], micro: int, length: int, pad_id: int,
                  device: torch.device) -> List[MicroBatch]:
    """The responses ``indices`` as micro-batches of ``micro`` sequences, right-padded to ``length`` tokens."""
    return [_micro_batch(r, indices[s:s + micro], length, pad_id, device) for s in range(0, len(indices), micro)]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def token_budget_groups(lengths: Sequence[int], indices: Sequence[int], budget: int,
                        multiple: int = 8) -> List[List[int]]:
    """``indices`` sorted by length (longest first, ties in index order) and grouped greedily so that a group's
    rows x padded length (its longest, rounded up to ``multiple``) stays within ``budget`` tokens; a sequence
    longer than the budget forms a group of its own."""
    order = sorted(indices, key=lambda j: -lengths[j])
    groups: List[List[int]] = []
    for j in order:
        if groups and (len(groups[-1]) + 1) * _round_up(lengths[groups[-1][0]], multiple) <= budget:
            groups[-1].append(j)
        else:
            groups.append([j])
    return groups


def step_batches(r: Rollouts, num_minis: int, micro: int, budget: Optional[int], pad_id: int,
                 device: torch.device, multiple: int = 8) -> List[List[MicroBatch]]:
    """The step's rollouts as ``num_minis`` mini-batches (consecutive responses, so each update sees the same
    responses either way) of micro-batches: ``micro`` sequences padded to the step's longest (``budget`` None),
    or token-budget micro-batches (``rl.max_tokens_per_micro_batch``), each padded only to its own longest."""
    per_mini = len(r.tokens) // num_minis
    length = padded_length(r, multiple)
    lengths = [len(t) for t in r.tokens]
    minis = []
    for u in range(num_minis):
        rows = list(range(u * per_mini, (u + 1) * per_mini))
        if budget is None:
            minis.append(micro_batches(r, rows, micro, length, pad_id, device))
        else:
            minis.append([_micro_batch(r, g, _round_up(lengths[g[0]], multiple), pad_id, device)
                          for g in token_budget_groups(lengths, rows, budget, multiple)])
    return minis


def padding_share(r: Rollouts, minis: List[List[MicroBatch]]) -> float:
    """Share of the tokens a trainer pass computes that are padding (rows x length against real tokens)."""
    computed = sum(mb.tokens.numel() for mini in minis for mb in mini)
    real = sum(len(r.tokens[j]) for mini in minis for mb in mini for j in (mb.rows or ()))
    return 1.0 - real / computed


def padded_length(r: Rollouts, multiple: int = 8) -> int:
    """The step's common sequence length: the longest sequence, rounded up to ``multiple``."""
    longest = max(len(t) for t in r.tokens)
    return -(-longest // multiple) * multiple

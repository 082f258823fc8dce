"""One step's rollouts on a rollout rank: generate, score, compute advantages, and lay the result out as
padded tensors that every rank of the model-parallel group receives."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence

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


def collect(
    engine: RolloutEngine,
    problems,
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    stop: Sequence[str],
    seed: int,
    reward_fn: RewardFn,
    scale_by_std: bool,
    phase=None,
    score: bool = True,
) -> Optional[Rollouts]:
    """Sample ``n`` responses for each problem, score them and compute GRPO advantages (per group of ``n``);
    ``phase(name)`` (a context manager factory, e.g. ``loop.Phases``) times generate / reward / advantages.
    ``score=False`` (the other tensor-parallel ranks of an engine: same samples) only generates, returns None."""
    phase = phase or (lambda name: nullcontext())
    with phase("generate"):
        groups = engine.generate(
            [p.token_ids for p in problems],
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
        )
    if not score:
        return None
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
    examples = [
        {"prompt": problems[i // n].text, "response": texts[i], "gold": golds[i], "reward": rewards[i]}
        for i in range(min(len(texts), EXAMPLES_PER_STEP))
    ]
    return Rollouts(tokens, prompt_lens, logprobs, rewards, truncated, advantages, examples)


def share(rollouts: Optional[Rollouts], mp_group, index: Optional[int] = None) -> Rollouts:
    """Every rank of the model-parallel group gets the group's rollouts: those of its one engine (reported by
    model-parallel rank 0), or those of several engines (one per pipeline stage; each reporting rank passes its
    engine ``index``), concatenated in engine order."""
    if dist.get_world_size(mp_group) == 1:
        assert rollouts is not None  # a group of one is its own engine's rank
        return rollouts
    parts: List[Any] = [None] * dist.get_world_size(mp_group)
    dist.all_gather_object(parts, (index, rollouts) if rollouts is not None else None, group=mp_group)
    found = sorted((p for p in parts if p is not None), key=lambda p: p[0] if p[0] is not None else -1)
    return merge([r for _, r in found])


def merge(parts: List[Rollouts]) -> Rollouts:
    """Several engines' rollouts as one (each keeps its groups of ``n`` whole)."""
    if len(parts) == 1:
        return parts[0]
    merged = Rollouts(
        *[
            sum((getattr(p, f) for p in parts), [])
            for f in ("tokens", "prompt_lens", "engine_logprobs", "rewards", "truncated", "advantages")
        ]
    )
    merged.examples = parts[0].examples
    return merged


def _micro_batch(r: Rollouts, rows: Sequence[int], length: int, pad_id: int, device: torch.device) -> MicroBatch:
    """The responses ``rows`` right-padded to ``length`` tokens, with their engine log-probs on the label grid."""
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length - 1))
    engine_lp = torch.zeros((len(rows), length - 1))
    for i, j in enumerate(rows):
        seq, p, lp = r.tokens[j], r.prompt_lens[j], r.engine_logprobs[j]
        tokens[i, : len(seq)] = torch.tensor(seq)
        mask[i, p - 1 : len(seq) - 1] = 1.0  # label t is token t + 1: responses start at label p - 1
        engine_lp[i, p - 1 : p - 1 + len(lp)] = torch.tensor(lp)
    adv = torch.tensor([r.advantages[j] for j in rows])
    rewards = torch.tensor([r.rewards[j] for j in rows])
    return MicroBatch(
        tokens=tokens.to(device),
        mask=mask.to(device),
        advantages=adv.to(device),
        rewards=rewards.to(device),
        engine_logprobs=engine_lp.to(device),
        rows=list(rows),
    )


PACK_MULTIPLE = 64
"""A packed row's length is padded to a multiple of this (tensor and sequence parallelism split it evenly)."""


def _packed_micro_batch(r: Rollouts, rows: Sequence[int], pad_id: int, device: torch.device) -> MicroBatch:
    """The responses ``rows`` packed end to end into one THD row (inputs and labels of each sequence), with the
    padded-layout fields of ``_micro_batch`` and the index that maps packed outputs back to them."""
    from megatron.core.packed_seq_params import PackedSeqParams

    lens = [len(r.tokens[j]) - 1 for j in rows]  # inputs per sequence: all tokens but the last
    mb = _micro_batch(r, rows, max(lens) + 1, pad_id, device)
    total = sum(lens)
    width = _round_up(total, PACK_MULTIPLE)
    inputs = torch.full((1, width), pad_id, dtype=torch.long)
    labels = torch.full((1, width), pad_id, dtype=torch.long)
    index = torch.zeros(mb.mask.shape, dtype=torch.long)
    valid = torch.zeros(mb.mask.shape)
    start, bounds = 0, [0]
    for i, (j, n) in enumerate(zip(rows, lens)):
        seq = torch.tensor(r.tokens[j])
        inputs[0, start : start + n], labels[0, start : start + n] = seq[:-1], seq[1:]
        index[i, :n] = torch.arange(start, start + n)
        valid[i, :n] = 1.0
        start += n
        bounds.append(start)
    if width > total:
        bounds.append(width)  # the tail padding attends only to itself and is never read
    cu = torch.tensor(bounds, dtype=torch.int32, device=device)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    mb.tokens, mb.labels = inputs.to(device), labels.to(device)
    mb.unpack_index, mb.unpack_valid = index.to(device), valid.to(device)
    mb.packed = PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest, max_seqlen_kv=longest
    )
    return mb


def micro_batches(
    r: Rollouts, indices: Sequence[int], micro: int, length: int, pad_id: int, device: torch.device
) -> List[MicroBatch]:
    """The responses ``indices`` as micro-batches of ``micro`` sequences, right-padded to ``length`` tokens."""
    return [_micro_batch(r, indices[s : s + micro], length, pad_id, device) for s in range(0, len(indices), micro)]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def token_budget_groups(
    lengths: Sequence[int], indices: Sequence[int], budget: int, multiple: int = 8
) -> List[List[int]]:
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


def step_batches(
    r: Rollouts,
    num_minis: int,
    micro: int,
    budget: Optional[int],
    pad_id: int,
    device: torch.device,
    multiple: int = 8,
    packing: bool = False,
) -> List[List[MicroBatch]]:
    """The step's rollouts as ``num_minis`` mini-batches (consecutive responses, so each update sees the same
    responses either way) of micro-batches: ``micro`` sequences padded to the step's longest (``budget`` None),
    or token-budget micro-batches (``rl.max_tokens_per_micro_batch``), each padded only to its own longest, or
    with ``packing`` each of those groups packed into one THD row."""
    per_mini = len(r.tokens) // num_minis
    length = padded_length(r, multiple)
    lengths = [len(t) for t in r.tokens]
    minis = []
    for u in range(num_minis):
        rows = list(range(u * per_mini, (u + 1) * per_mini))
        if budget is None:
            minis.append(micro_batches(r, rows, micro, length, pad_id, device))
        else:
            groups = token_budget_groups(lengths, rows, budget, 1 if packing else multiple)
            minis.append(
                [
                    _packed_micro_batch(r, g, pad_id, device)
                    if packing
                    else _micro_batch(r, g, _round_up(lengths[g[0]], multiple), pad_id, device)
                    for g in groups
                ]
            )
    return minis


def padding_share(r: Rollouts, minis: List[List[MicroBatch]]) -> float:
    """Share of the input positions a trainer pass computes that are padding (each sequence's inputs are its
    tokens but the last)."""
    computed = sum(
        mb.tokens.numel() if mb.packed is not None else mb.tokens[:, :-1].numel() for mini in minis for mb in mini
    )
    real = sum(len(r.tokens[j]) - 1 for mini in minis for mb in mini for j in (mb.rows or ()))
    return 1.0 - real / computed


def padded_length(r: Rollouts, multiple: int = 8) -> int:
    """The step's common sequence length: the longest sequence, rounded up to ``multiple``."""
    longest = max(len(t) for t in r.tokens)
    return -(-longest // multiple) * multiple

"""The policy on Megatron-Core: per-token log-probabilities and the clipped-surrogate update, through the same
pipeline schedules, DDP and optimizer as pre-training, so every TP x PP x DP layout of training works for RL.

A step's sequences are ``prompt + response`` right-padded to one length ``L``; labels are the tokens shifted by one,
and ``mask`` [b, L-1] marks the label positions that are response tokens. Logits stay vocabulary-parallel: the
log-probability of a label is Megatron-Core's ``vocab_parallel_cross_entropy`` negated, the entropy reduces its
three sums over the tensor-parallel group. Losses follow the training loop's per-token convention: each micro-batch
returns a *sum* and a count, and Megatron-Core divides the gradients by the mini-batch's total count over
data-parallel ranks (tokens for ``token-mean``, sequences for the ``seq-mean-*`` modes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import torch
import torch.distributed as dist

from megatron_octo.config.schema import RLConfig
from megatron_octo.parallel import ParallelContext
from megatron_octo.rl import algorithms as alg

_PADDING_LOGIT = -1e30
"""Logit given to vocabulary padding: exp() of it is 0, and 0 * it is 0 (not NaN, as with -inf) in the entropy."""


def _scaled(logits: torch.Tensor, temperature: float, vocab_size: int, tp_rank: int) -> torch.Tensor:
    """fp32 logits / temperature with the padding rows of the vocabulary (TP padding beyond ``vocab_size``) masked
    out: Megatron-Core's padded output rows give logit 0, which would take probability mass that the engine's
    (unpadded) model never assigns."""
    scaled = logits.float() / temperature  # [b, s, V/tp]
    local = scaled.shape[-1]
    first_padding = vocab_size - tp_rank * local  # local index of the first padding column on this rank
    if first_padding < local:
        scaled[..., max(first_padding, 0) :] = _PADDING_LOGIT
    return scaled


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, vocab_size: int, tp_rank: int = 0
) -> torch.Tensor:
    """Log-probability of each label under softmax(logits / temperature) over the real vocabulary; logits
    [b, s, V/tp] (this rank's vocab slice), labels [b, s] -> [b, s]. Differentiable."""
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    return -vocab_parallel_cross_entropy(_scaled(logits, temperature, vocab_size, tp_rank), labels)


def vocab_parallel_entropy(logits: torch.Tensor, temperature: float, tp_group, vocab_size: int) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the real vocabulary, from vocab slices: [b, s, V/tp] -> [b, s].
    Differentiable (autograd-aware all-reduces)."""
    from torch.distributed.nn.functional import all_reduce

    scaled = _scaled(logits, temperature, vocab_size, dist.get_rank(tp_group))
    tp = dist.get_world_size(tp_group)
    peak = scaled.detach().max(dim=-1, keepdim=True).values  # [b, s, 1]; any shift works, the max is stable
    if tp > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=tp_group)
    shifted = scaled - peak
    exp = shifted.exp()
    total, weighted = exp.sum(-1), (exp * shifted).sum(-1)  # [b, s] each
    if tp > 1:
        total, weighted = all_reduce(total, group=tp_group), all_reduce(weighted, group=tp_group)
    return total.log() - weighted / total


@dataclass
class MicroBatch:
    """One micro-batch of the rank's rollouts (tensors on the rank's device)."""

    tokens: torch.Tensor
    """[b, L] prompt + response, right-padded."""
    mask: torch.Tensor
    """[b, L-1] 1.0 where the label is a response token."""
    advantages: torch.Tensor
    """[b] (GRPO) or [b, L-1] (PPO) advantages."""
    old_logprobs: Optional[torch.Tensor] = None
    """[b, L-1] the trainer's log-probs before the update (filled on last-stage ranks)."""
    ref_logprobs: Optional[torch.Tensor] = None
    """[b, L-1] the reference model's log-probs (when the KL term is on)."""
    rewards: Optional[torch.Tensor] = None
    """[b] each response's reward."""
    old_values: Optional[torch.Tensor] = None
    """PPO: [b, L-1] the critic's values before the update (last-stage ranks)."""
    returns: Optional[torch.Tensor] = None
    """PPO: [b, L-1] GAE returns, the critic's targets (last-stage ranks)."""
    engine_logprobs: Optional[torch.Tensor] = None
    """[b, L-1] the engine's log-probs of the response tokens (0 elsewhere): the mismatch metric's other side."""
    rows: Optional[List[int]] = None
    """Which of the step's responses the rows are (token-budget batching reorders them)."""
    packed: Optional[object] = None
    """THD packing (``rl.sequence_packing``): Megatron-Core ``PackedSeqParams``; ``tokens`` is then [1, T], the
    responses' inputs (each sequence without its last token) end to end, and ``labels`` [1, T] their next tokens.
    Every other field keeps the padded [b, L-1] layout; model outputs are brought to it by ``to_rows``."""
    labels: Optional[torch.Tensor] = None
    """[1, T] packed labels (packed micro-batches only)."""
    unpack_index: Optional[torch.Tensor] = None
    """[b, L-1] position in the packed row of each padded-layout label (0 where there is none)."""
    unpack_valid: Optional[torch.Tensor] = None
    """[b, L-1] 1.0 where ``unpack_index`` points at a real label."""


def to_rows(x: torch.Tensor, mb: MicroBatch) -> torch.Tensor:
    """A per-token model output in the padded [b, L-1] layout: packed [1, T] -> rows (0 where no label), else as
    is. Differentiable."""
    if mb.packed is None:
        return x
    assert mb.unpack_valid is not None  # set together with packed
    return x[0][mb.unpack_index] * mb.unpack_valid


def model_inputs(mb: MicroBatch):
    """(input ids, labels, extra forward kwargs) of a micro-batch."""
    if mb.packed is not None:
        return mb.tokens, mb.labels, {"packed_seq_params": mb.packed}
    return mb.tokens[:, :-1].contiguous(), mb.tokens[:, 1:].contiguous(), {}  # [b, L-1] each


def _forward(model, mb: MicroBatch):
    inputs, labels, kwargs = model_inputs(mb)
    return model(inputs, None, None, **kwargs), labels  # last stage: logits [b, s, V/tp]; else hidden states


def logprob_step(ctx: ParallelContext, temperature: float, with_entropy: bool, vocab_size: int):
    """``forward_step_func`` that returns each micro-batch's label log-probs (and entropies) on the last stage."""

    def forward_step(data_iterator: Iterator[MicroBatch], model):
        mb = next(data_iterator)
        output, labels = _forward(model, mb)

        def collect(logits):
            with torch.no_grad():
                out = {"logprobs": to_rows(token_logprobs(logits, labels, temperature, vocab_size, ctx.tp_rank), mb)}
                if with_entropy:
                    out["entropy"] = to_rows(vocab_parallel_entropy(logits, temperature, ctx.pgs.tp, vocab_size), mb)
            return logits.new_zeros(()), torch.tensor(1, dtype=torch.int, device=logits.device), out

        return output, collect

    return forward_step


def _normalizer_and_count(mode: str, mask: torch.Tensor):
    """What one micro-batch sums and the count Megatron-Core divides the gradients by."""
    if mode == "token-mean":
        return 1.0, mask.sum().to(torch.int)
    return 1.0, (mask.sum(-1) > 0).sum().to(torch.int)  # sequences with a response token, as alg.aggregate


def loss_step(ctx: ParallelContext, rl: RLConfig, vocab_size: int):
    """``forward_step_func`` of the policy update: clipped surrogate (+ KL, - entropy) as a sum and a count."""
    temperature, mode = rl.rollout.temperature, rl.loss_aggregation

    def forward_step(data_iterator: Iterator[MicroBatch], model):
        mb = next(data_iterator)
        output, labels = _forward(model, mb)

        def loss_func(logits):
            lp = to_rows(token_logprobs(logits, labels, temperature, vocab_size, ctx.tp_rank), mb)  # [b, L-1]
            norm, count = _normalizer_and_count(mode, mb.mask)
            loss, stats = alg.policy_loss(
                lp,
                mb.old_logprobs,
                mb.advantages,
                mb.mask,
                clip_ratio=rl.clip_ratio,
                clip_ratio_high=rl.clip_ratio_high,
                mode=mode,
                normalizer=norm,
            )
            tokens = mb.mask.sum()
            logs = {
                "pg_loss": torch.stack([loss.detach(), count.float()]),
                "clip_fraction": torch.stack([stats["clip_fraction"].detach() * tokens, tokens]),
                "ratio": torch.stack([stats["ratio_mean"].detach() * tokens, tokens]),
            }
            if rl.kl_coef > 0:
                kl = alg.aggregate(alg.kl_estimate(lp, mb.ref_logprobs, rl.kl_estimator), mb.mask, mode, norm)
                loss = loss + rl.kl_coef * kl
                logs["kl"] = torch.stack([kl.detach(), count.float()])
            if rl.entropy_coef > 0:
                ent = alg.aggregate(
                    to_rows(vocab_parallel_entropy(logits, temperature, ctx.pgs.tp, vocab_size), mb),
                    mb.mask,
                    mode,
                    norm,
                )
                loss = loss - rl.entropy_coef * ent
            return loss, count, logs

        return output, loss_func

    return forward_step


def run_schedule(parts, ctx: ParallelContext, step_func, micro_batches: List[MicroBatch], forward_only: bool):
    """One pass of Megatron-Core's pipeline schedule over ``micro_batches``. Micro-batches of different shapes
    (token-budget batching) make the pipeline stages exchange each activation's shape first
    (``variable_seq_lengths``); the same micro-batches reach every stage, so all stages decide alike."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    b, length = micro_batches[0].tokens.shape
    if any(mb.tokens.shape != micro_batches[0].tokens.shape for mb in micro_batches):
        parts.p2p.config.variable_seq_lengths = True
    if micro_batches[0].packed is None:
        length -= 1  # the inputs are the tokens but the last
    return get_forward_backward_func()(
        forward_step_func=step_func,
        data_iterator=iter(micro_batches),
        model=parts.model,
        num_microbatches=len(micro_batches),
        seq_length=length,
        micro_batch_size=b,
        forward_only=forward_only,
        p2p_communicator=parts.p2p,
        pg_collection=ctx.pgs,
    )


def reduce_logs(outputs: List[Dict[str, torch.Tensor]], ctx: ParallelContext, keys) -> Dict[str, float]:
    """Global ``sum / count`` of each logged [sum, count] pair (last-stage, tp-rank-0 ranks contribute)."""
    totals = torch.zeros(len(keys), 2, dtype=torch.float64, device=ctx.device)
    if ctx.is_last_stage and ctx.tp_rank == 0:
        for item in outputs:
            for i, key in enumerate(keys):
                if key in item:
                    totals[i] += item[key].to(device=ctx.device, dtype=torch.float64)
    dist.all_reduce(totals)
    return {k: float(totals[i, 0] / totals[i, 1]) if totals[i, 1] > 0 else float("nan") for i, k in enumerate(keys)}


def optimizer_update(
    parts, ctx: ParallelContext, step_func, micro_batches: List[MicroBatch], keys, prefix: str = ""
) -> Dict[str, float]:
    """One optimizer update of ``parts`` over a mini-batch with ``step_func``; skipped when the first logged
    loss (``keys[0]``) is not finite or (fp16) the loss scaler finds overflowing gradients. Returns the logged
    means, ``grad_norm`` and ``skipped`` (with ``prefix``)."""
    parts.optimizer.zero_grad()
    for chunk in parts.model:
        chunk.zero_grad_buffer()
    outputs = run_schedule(parts, ctx, step_func, micro_batches, forward_only=False)
    stats = reduce_logs(outputs, ctx, keys)
    stats[f"{prefix}grad_norm"], stats[f"{prefix}skipped"] = float("nan"), 1.0
    if math.isfinite(stats[keys[0]]):
        updated, norm, _ = parts.optimizer.step()  # fp16: False when the loss scaler found overflowing gradients
        if updated:
            stats[f"{prefix}grad_norm"], stats[f"{prefix}skipped"] = float(norm or 0.0), 0.0
    return stats


def update(
    parts, ctx: ParallelContext, rl: RLConfig, micro_batches: List[MicroBatch], vocab_size: int
) -> Dict[str, float]:
    """One policy update over a mini-batch (clipped surrogate, + KL, - entropy)."""
    keys = ["pg_loss", "clip_fraction", "ratio"] + (["kl"] if rl.kl_coef > 0 else [])
    return optimizer_update(parts, ctx, loss_step(ctx, rl, vocab_size), micro_batches, keys)

"""The numerical core of RL on math: GRPO / PPO advantages, KL estimates, losses and their aggregation.

Pure functions of torch tensors; no distributed calls, no model code. The RL loop (``megatron_octo.rl.loop``) calls
them per micro-batch. Conventions shared by every function here:

* Per-token tensors are ``[b, t]`` over *response* tokens only; ``mask`` ``[b, t]`` is 1 on real response tokens
  and 0 on padding (bool or float accepted). Values under ``mask == 0`` never change a result or a gradient: they
  are replaced with ``torch.where`` *before* any non-linear operation (``exp``, squares), because ``x * 0`` is NaN
  when ``x`` is inf and an inf in an unselected branch still poisons the backward pass.
* Results are float32 (inputs such as bf16 logprobs are upcast first).
* Stats are returned as detached 0-dim tensors, not Python floats: calling ``.item()`` per micro-batch would force a
  GPU sync each time; the loop reduces and converts them once per step.

Stage 3 of RECIPE.md (GRPO, KL and entropy coefficients 0, clip 0.2, reward on the last response token) uses
``grpo_advantages`` -> ``token_advantages`` -> ``policy_loss``; the critic path (``last_token_rewards``, ``gae``,
``whiten``, ``value_loss``) is there for PPO baselines.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from megatron_octo.config.choices import KL_ESTIMATORS, LOSS_AGGREGATIONS

_KL_ALIASES = {"kl": "k1", "k2": "mse", "k3": "low_var_kl"}
# k3 = exp(d) - d - 1 with d = ref - logp: the log-ratio is clamped before exp so that exp stays finite (exp(20) is
# ~4.9e8, far from float32 overflow), and the estimate itself is clamped to [-10, 10] (k3 >= 0 exactly, so the lower
# bound only catches rounding); tokens with k3 > 10 then give no gradient, a deliberate trade for stability.
_K3_LOG_RATIO_CLAMP = 20.0
_K3_CLAMP = 10.0


# ----------------------------------------------------------------------------------------------------- masked helpers
def _bool(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` as float32 with padding set to exactly 0 (no NaN/inf leaks from padding, see the module docstring)."""
    x = x.float()
    return torch.where(_bool(mask), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is set (over all of them when ``dim`` is None)."""
    xm = _masked(x, mask)
    return xm.sum() if dim is None else xm.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is set; 0 (not NaN) where there are none."""
    count = _bool(mask).float()
    count = count.sum() if dim is None else count.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """PPO advantage normalization over the real tokens of the whole batch: ``(x - mean) / sqrt(var + eps)``.

    ``var`` is the unbiased (Bessel-corrected) masked variance, as in the usual PPO implementations; with fewer than
    two real tokens it is taken as 0. ``shift_mean=False`` only rescales (the mean is added back). Padding -> 0.
    """
    m = _bool(mask)
    n = m.float().sum()
    mean = masked_mean(x, m)
    var = masked_sum((x.float() - mean) ** 2, m) / (n - 1).clamp(min=1.0)
    out = (x.float() - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _masked(out, m)


# --------------------------------------------------------------------------------------------------------- advantages
def grpo_advantages(rewards: Tensor, group_size: int, *, eps: float = 1e-6, scale_by_std: bool = True) -> Tensor:
    """GRPO outcome advantages: ``(r - group mean) / (group std + eps)``, one per response.

    ``rewards`` [b]: consecutive ``group_size`` responses share a prompt. ``std`` is the *unbiased* (n - 1) standard
    deviation, as in DeepSeekMath's GRPO and verl (``torch.std``'s default), so OctoThinker's verl runs are matched.
    A group whose rewards are all equal (everything right or everything wrong, or ``group_size == 1``) carries no
    learning signal and gets exactly 0: it is set explicitly, because the float mean of equal values can differ from
    them by one rounding step and ``0 / (0 + eps)`` would then blow that up. ``scale_by_std=False`` gives Dr. GRPO's
    mean-centering only (no per-prompt difficulty reweighting). No gradient flows through the result.
    """
    assert rewards.dim() == 1, f"rewards must be [b], got shape {tuple(rewards.shape)}"
    b = rewards.shape[0]
    assert group_size >= 1 and b % group_size == 0, (
        f"batch of {b} rewards is not a whole number of groups of group_size={group_size}"
    )
    r = rewards.detach().float().view(-1, group_size)  # [groups, g]
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_by_std and group_size > 1:
        adv = adv / (r.std(dim=1, unbiased=True, keepdim=True) + eps)
    flat = (r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)).expand_as(r)
    return torch.where(flat, torch.zeros_like(adv), adv).view(b)


def token_advantages(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """Broadcast one advantage per sequence ([b]) to its response tokens ([b, t]); 0 on padding."""
    return _masked(seq_adv.detach().float()[:, None].expand(mask.shape), mask)


def last_token_rewards(seq_rewards: Tensor, mask: Tensor) -> Tensor:
    """[b, t] zeros except each sequence's scalar reward ([b]) on its last real response token.

    RECIPE.md: "reward on the last response token". A sequence with no real token gets no reward anywhere.
    """
    m = _bool(mask)
    pos = torch.arange(1, m.shape[1] + 1, device=m.device)  # 1-based so that "no token" is 0
    last = (m * pos).amax(dim=1) - 1  # [b], -1 when empty
    at_last = pos[None, :] - 1 == last[:, None]  # [b, t]
    return torch.where(at_last, seq_rewards.float()[:, None], torch.zeros((), device=m.device))


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float) -> Tuple[Tensor, Tensor]:
    """Generalized advantage estimation over real response tokens; returns ``(advantages, returns)``, both [b, t].

    Walking backwards, ``delta_t = r_t + gamma * V_next - V_t`` and ``A_t = delta_t + gamma * lam * A_next``, where
    "next" is the next *real* token of the same sequence: padding neither contributes nor receives (it is skipped,
    which also handles holes in the mask), and the value after the last real token is 0 (the response ended).
    ``returns = advantages + values``. Padding -> 0 in both. Computed without gradient (advantages are targets).
    """
    m = _bool(mask)
    r, v = _masked(rewards, m), _masked(values, m)
    b, t = r.shape
    next_v = torch.zeros(b, device=r.device)  # value of the next real token (0 past the end)
    next_a = torch.zeros(b, device=r.device)  # advantage of the next real token
    adv = torch.zeros_like(r)
    for i in range(t - 1, -1, -1):
        a = r[:, i] + gamma * next_v - v[:, i] + gamma * lam * next_a
        adv[:, i] = torch.where(m[:, i], a, adv[:, i])
        next_v = torch.where(m[:, i], v[:, i], next_v)  # padding leaves the carried state untouched
        next_a = torch.where(m[:, i], a, next_a)
    return adv, _masked(adv + v, m)


# ------------------------------------------------------------------------------------------------------ KL, entropy
def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "low_var_kl") -> Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token logprobs, [b, t].

    ``k1``: ``logp - ref`` (unbiased, high variance, can be negative); ``abs``: ``|logp - ref|``; ``mse`` (k2):
    ``0.5 (logp - ref)^2``; ``low_var_kl`` (Schulman's k3): ``exp(ref - logp) - (ref - logp) - 1``, unbiased and
    always >= 0, clamped to [-10, 10] (see ``_K3_CLAMP``). Aliases: kl -> k1, k2 -> mse, k3 -> low_var_kl.
    Padding is not masked here: pass the result to ``aggregate`` with the mask.
    """
    name = _KL_ALIASES.get(kind, kind)
    diff = logprobs.float() - ref_logprobs.float()  # [b, t]
    if name == "k1":
        return diff
    if name == "abs":
        return diff.abs()
    if name == "mse":
        return 0.5 * diff.square()
    if name == "low_var_kl":
        d = (-diff).clamp(-_K3_LOG_RATIO_CLAMP, _K3_LOG_RATIO_CLAMP)  # ref - logp
        return (torch.exp(d) - d - 1.0).clamp(-_K3_CLAMP, _K3_CLAMP)
    raise ValueError(f"unknown KL estimator '{kind}'; choose from {', '.join(KL_ESTIMATORS)}")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax over the last dim: ``logsumexp(l) - sum(softmax(l) * l)``; shape ``logits.shape[:-1]``.

    Computed in float32 after subtracting the row maximum: the entropy is shift-invariant, and without the shift
    two nearly equal large terms cancel (logits ~1e4 lose ~1e-3 to float32 rounding). Logits must be finite; use a
    large negative number rather than -inf to exclude entries, since ``0 * -inf`` is NaN.
    """
    z = logits.float()
    z = z - z.amax(dim=-1, keepdim=True).detach()  # the max's gradient cancels exactly, so it need not flow
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


# --------------------------------------------------------------------------------------------------------- losses
def aggregate(loss_mat: Tensor, mask: Tensor, mode: str = "token-mean", normalizer: Optional[float] = None) -> Tensor:
    """Reduce a [b, t] per-token loss to a scalar over real tokens.

    * ``token-mean``: ``sum(loss * mask) / N``, N = number of real tokens in the batch.
    * ``seq-mean-token-mean``: ``sum_s mean_tokens(loss_s) / S``.
    * ``seq-mean-token-sum``: ``sum_s sum_tokens(loss_s) / S``.

    S counts the sequences with at least one real token (an empty row contributes nothing and is not counted, so it
    cannot produce NaN; an all-padding batch gives 0). ``normalizer``, when given, replaces N (token-mean) or S (seq
    modes): pass the *global* count over all micro-batches and data-parallel ranks of the step so that summing the
    micro-batch losses (and all-reducing gradients with a sum) gives the exact global mean, whatever the split.
    """
    m = _bool(mask)
    if mode == "token-mean":
        total = masked_sum(loss_mat, m)
        count = m.float().sum().clamp(min=1.0)
    elif mode in ("seq-mean-token-mean", "seq-mean-token-sum"):
        per_seq = masked_mean(loss_mat, m, dim=-1) if mode == "seq-mean-token-mean" else masked_sum(loss_mat, m, -1)
        total = per_seq.sum()
        count = m.any(dim=-1).float().sum().clamp(min=1.0)
    else:
        raise ValueError(f"unknown loss aggregation '{mode}'; choose from {', '.join(LOSS_AGGREGATIONS)}")
    return total / (count if normalizer is None else normalizer)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_ratio: float = 0.2,
    clip_ratio_high: Optional[float] = None,
    mode: str = "token-mean",
    normalizer: Optional[float] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """PPO clipped surrogate; returns ``(loss, stats)``.

    ``ratio = exp(logp - old)``; per token ``max(-A * ratio, -A * clip(ratio, 1 - clip_ratio, 1 + clip_ratio_high))``
    (``clip_ratio_high`` defaults to ``clip_ratio``; a larger one is DAPO's clip-higher), reduced by ``aggregate``.
    ``advantages`` is [b] (broadcast to the response tokens) or [b, t]; it and ``old_logprobs`` are detached constants.
    Gradient flows only through ``logprobs``, and is zero on tokens where the clipped term is the active one.

    Stats (detached 0-dim tensors, means over this micro-batch's real tokens, regardless of ``normalizer``):
    ``clip_fraction``: share of tokens where the clipped term is strictly larger (at exactly the bound both terms
    are equal, which counts as not clipped); ``approx_kl``: mean of ``old - logp`` (the k1 estimate of
    KL(old || new) on tokens sampled from old, as verl's ``ppo_kl``); ``ratio_mean``: mean ratio.
    """
    m = _bool(mask)
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    adv = token_advantages(advantages, m) if advantages.dim() == 1 else _masked(advantages.detach(), m)
    log_ratio = _masked(logprobs.float() - old_logprobs.detach().float(), m)  # masked before exp: see module doc
    ratio = torch.exp(log_ratio)  # [b, t]
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_ratio, 1.0 + high)
    loss = aggregate(torch.maximum(unclipped, clipped), m, mode, normalizer)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), m),
            "approx_kl": masked_mean(-log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip: float = 0.2,
    mode: str = "token-mean",
    normalizer: Optional[float] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Clipped critic loss ``0.5 * max((v - R)^2, (clip(v, old - c, old + c) - R)^2)``; returns ``(loss, stats)``.

    The pessimistic max keeps the new value from gaining by moving further than ``clip`` from the rollout's value.
    ``old_values`` and ``returns`` are constants (detached). Stat ``vf_clip_fraction``: share of real tokens where
    the clipped term is strictly larger (the gradient is then zero), as a detached 0-dim tensor.
    """
    m = _bool(mask)
    v, old, ret = _masked(values, m), _masked(old_values.detach(), m), _masked(returns.detach(), m)
    v_clipped = old + (v - old).clamp(-clip, clip)
    unclipped, clipped = (v - ret).square(), (v_clipped - ret).square()
    loss = aggregate(0.5 * torch.maximum(unclipped, clipped), m, mode, normalizer)
    with torch.no_grad():
        stats = {"vf_clip_fraction": masked_mean((clipped > unclipped).float(), m)}
    return loss, stats

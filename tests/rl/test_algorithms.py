"""GRPO / PPO numerics (megatron_octo.rl.algorithms). Every expected number is worked out by hand in the test, with
the arithmetic in a comment; none comes from the code under test."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_octo.rl.algorithms import (
    aggregate,
    entropy_from_logits,
    gae,
    grpo_advantages,
    kl_estimate,
    last_token_rewards,
    masked_mean,
    masked_sum,
    policy_loss,
    token_advantages,
    value_loss,
    whiten,
)

LN2 = math.log(2.0)
RAGGED = torch.tensor([[1, 1, 1], [1, 1, 0]])  # two sequences of 3 and 2 real tokens


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def close(actual, expected, tol=1e-5):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float32), t(expected), rtol=tol, atol=tol), (
        actual, expected)


def exact_log(r: float) -> float:
    """A float32 log-ratio d with torch.exp(d) == float32(r) exactly (test input construction for the clip bounds)."""
    target, d = t(r), torch.log(t(r))
    for _ in range(8):
        if torch.exp(d) == target:
            return d.item()
        d = torch.nextafter(d, t(10.0) if torch.exp(d) < target else t(-10.0))
    raise AssertionError(f"no float32 log maps exactly to {r}")


# ----------------------------------------------------------------------------------------------------------- GRPO
def test_grpo_one_group_of_plus_minus_one():
    # mean = 0; unbiased var = (1 + 1 + 1 + 1) / (4 - 1) = 4/3; std = sqrt(4/3) = 1.1547; A = +-1 / 1.1547 = +-0.8660
    adv = grpo_advantages(t([1, -1, -1, 1]), 4)
    s = math.sqrt(3) / 2  # 0.8660254
    close(adv, [s, -s, -s, s])


def test_grpo_all_equal_group_is_exactly_zero():
    for value in (1.0, -1.0, 0.3):  # 0.3: four float32 0.3s do not average back to exactly 0.3
        adv = grpo_advantages(t([value] * 4), 4)
        assert torch.equal(adv, torch.zeros(4)), adv
    assert torch.equal(grpo_advantages(t([1.0, -1.0]), 1), torch.zeros(2))  # a group of one carries no signal


def test_grpo_three_groups_at_once():
    # group 1 [1,-1,-1,1]: +-0.8660 (above). group 2 [1,1,1,-1]: mean 0.5, deviations [.5,.5,.5,-1.5],
    # var = (3 * .25 + 2.25) / 3 = 1 -> std 1 -> [.5,.5,.5,-1.5]. group 3 all -1 -> 0.
    adv = grpo_advantages(t([1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, -1]), 4)
    s = math.sqrt(3) / 2
    close(adv, [s, -s, -s, s, 0.5, 0.5, 0.5, -1.5, 0, 0, 0, 0])
    assert adv[8:].eq(0).all()


def test_grpo_scale_by_std_false_and_binary_rewards():
    # [1,0,0,0]: mean .25, deviations [.75,-.25,-.25,-.25]; var = (.5625 + 3 * .0625) / 3 = .25 -> std .5
    close(grpo_advantages(t([1, 0, 0, 0]), 4), [1.5, -0.5, -0.5, -0.5])
    close(grpo_advantages(t([1, 0, 0, 0]), 4, scale_by_std=False), [0.75, -0.25, -0.25, -0.25])
    assert torch.equal(grpo_advantages(t([1, 1]), 2, scale_by_std=False), torch.zeros(2))


def test_grpo_eps_is_added_to_std():
    # [1, -1]: mean 0, unbiased std = sqrt((1 + 1) / 1) = sqrt 2; eps = 1 -> 1 / (1.41421 + 1) = 0.414214
    close(grpo_advantages(t([1, -1]), 2, eps=1.0), [1 / (math.sqrt(2) + 1), -1 / (math.sqrt(2) + 1)])


def test_grpo_rejects_partial_group():
    with pytest.raises(AssertionError, match="not a whole number of groups of group_size=4"):
        grpo_advantages(t([1, -1, 1, -1, 1, 1]), 4)


# ------------------------------------------------------------------------------------------- masked helpers, tokens
def test_masked_mean_and_sum():
    x = t([[1, 2, 3], [4, 5, 99]])
    close(masked_sum(x, RAGGED), 15.0)  # 1 + 2 + 3 + 4 + 5
    close(masked_mean(x, RAGGED), 3.0)  # 15 / 5
    close(masked_mean(x, RAGGED, dim=-1), [2.0, 4.5])  # 6 / 3, 9 / 2
    close(masked_sum(x, RAGGED, dim=-1), [6.0, 9.0])
    close(masked_mean(x, torch.zeros(2, 3)), 0.0)  # nothing to average: 0, not NaN


def test_token_advantages_broadcast_and_padding():
    out = token_advantages(t([0.5, -2.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert torch.equal(out, t([[0.5, 0.5, 0.0], [-2.0, 0.0, 0.0]]))


def test_last_token_rewards_ragged():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    out = last_token_rewards(t([1.0, -1.0, 0.5, 7.0]), mask)
    # last real token: index 2, 0, 3, none (the empty row gets nothing)
    assert torch.equal(out, t([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 0, 0, 0.5], [0, 0, 0, 0]]))


def test_whiten():
    # [1, 2, 3]: mean 2, unbiased var = (1 + 0 + 1) / 2 = 1 -> [-1, 0, 1]; padding -> 0
    mask = torch.tensor([[1, 1, 1, 0]])
    x = t([[1, 2, 3, 100]])
    close(whiten(x, mask), [[-1, 0, 1, 0]])
    close(whiten(x, mask, shift_mean=False), [[1, 2, 3, 0]])  # (x - 2) / 1 + 2
    # across rows: [2, 4, 6]: mean 4, var = (4 + 0 + 4) / 2 = 4, std 2 -> [-1, 0, 1]
    close(whiten(t([[2, 4], [6, -50]]), torch.tensor([[1, 1], [1, 0]])), [[-1, 0], [1, 0]])


# ----------------------------------------------------------------------------------------------------- aggregation
def test_aggregation_modes_on_a_ragged_batch():
    loss = t([[1, 2, 3], [4, 5, 100]])
    close(aggregate(loss, RAGGED, "token-mean"), 3.0)  # (1+2+3+4+5) / 5
    close(aggregate(loss, RAGGED, "seq-mean-token-mean"), 3.25)  # (6/3 + 9/2) / 2 = (2 + 4.5) / 2
    close(aggregate(loss, RAGGED, "seq-mean-token-sum"), 7.5)  # (6 + 9) / 2


def test_aggregation_normalizer():
    loss = t([[1, 2, 3], [4, 5, 100]])
    close(aggregate(loss, RAGGED, "token-mean", normalizer=10), 1.5)  # 15 / 10
    close(aggregate(loss, RAGGED, "seq-mean-token-mean", normalizer=4), 1.625)  # (2 + 4.5) / 4
    close(aggregate(loss, RAGGED, "seq-mean-token-sum", normalizer=4), 3.75)  # (6 + 9) / 4


def test_aggregation_empty_sequences_give_no_nan():
    loss = t([[1, 2, 3], [4, 5, 100], [7, 7, 7]])
    mask = torch.cat([RAGGED, torch.zeros(1, 3, dtype=RAGGED.dtype)])  # third row: no real token
    close(aggregate(loss, mask, "token-mean"), 3.0)  # unchanged: 15 / 5
    close(aggregate(loss, mask, "seq-mean-token-mean"), 3.25)  # the empty row is not counted
    close(aggregate(loss, mask, "seq-mean-token-sum"), 7.5)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert aggregate(loss, torch.zeros(3, 3), mode).item() == 0.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(loss, mask, "sum")


# ------------------------------------------------------------------------------------------------------ policy loss
def one_token(ratio: float, adv: float, **kw):
    """Loss, clip fraction and d loss / d logp for a single token with the given ratio (old logprob 0)."""
    logp = torch.tensor([[exact_log(ratio)]], requires_grad=True)
    loss, stats = policy_loss(logp, torch.zeros(1, 1), t([adv]), torch.ones(1, 1), **kw)
    loss.backward()
    return loss.item(), stats["clip_fraction"].item(), logp.grad.item()


# (ratio, A, loss, clipped, gradient); loss = max(-A r, -A clip(r, .8, 1.2)), d/dlogp of -A r is -A r
CLIP_CASES = [
    (1.2, 1.0, -1.2, 0.0, -1.2),    # exactly at 1 + eps: both terms -1.2, counted as not clipped
    (1.19, 1.0, -1.19, 0.0, -1.19),  # just inside: max(-1.19, -1.19)
    (1.21, 1.0, -1.2, 1.0, 0.0),    # just outside: max(-1.21, -1.2) = -1.2, the constant clipped term
    (0.7, 1.0, -0.7, 0.0, -0.7),    # A > 0 below 1 - eps: max(-0.7, -0.8) = -0.7, not clipped (pessimistic)
    (0.8, -1.0, 0.8, 0.0, 0.8),     # exactly at 1 - eps, A < 0: both 0.8
    (0.81, -1.0, 0.81, 0.0, 0.81),  # just inside: max(0.81, 0.81)
    (0.79, -1.0, 0.8, 1.0, 0.0),    # just outside: max(0.79, 0.8) = 0.8 clipped
    (1.3, -1.0, 1.3, 0.0, 1.3),     # A < 0 above 1 + eps: max(1.3, 1.2) = 1.3 not clipped
    (1.5, 0.0, 0.0, 0.0, 0.0),      # A = 0: nothing to gain either way
]


@pytest.mark.parametrize("ratio,adv,loss,clipped,grad", CLIP_CASES)
def test_clip_boundaries(ratio, adv, loss, clipped, grad):
    got_loss, got_clip, got_grad = one_token(ratio, adv)
    close(got_loss, loss)
    assert got_clip == clipped
    close(got_grad, grad)


def test_clip_higher_is_asymmetric():
    close(one_token(1.25, 2.0, clip_ratio_high=0.28)[:2], [-2.5, 0.0])  # 1.25 < 1.28: -2 * 1.25
    close(one_token(1.3, 2.0, clip_ratio_high=0.28)[:2], [-2.56, 1.0])  # -2 * 1.28
    close(one_token(0.79, -1.0, clip_ratio_high=0.28)[:2], [0.8, 1.0])  # the low bound stays 1 - 0.2


def test_policy_loss_batch_stats_and_gradients():
    ratios = [1.21, 1.1, 0.79, 0.9, 5.0]  # the last is padding (ratio 5 with A = 1 would count as clipped)
    logp = torch.tensor([[exact_log(r) for r in ratios]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, stats = policy_loss(logp, torch.zeros(1, 5), t([[1, 1, -1, -1, 1]]), mask)
    loss.backward()
    close(loss, -0.15)  # (-1.2 - 1.1 + 0.8 + 0.9) / 4 = -0.6 / 4
    close(stats["clip_fraction"], 0.5)  # tokens 0 and 2 of 4
    close(stats["ratio_mean"], 1.0)  # (1.21 + 1.1 + 0.79 + 0.9) / 4 = 4 / 4
    close(stats["approx_kl"], -math.log(1.21 * 1.1 * 0.79 * 0.9) / 4)  # mean of old - logp = -log r
    # d/dlogp_i = -A_i r_i / 4 where unclipped, 0 where clipped or padding
    close(logp.grad, [[0.0, -1.1 / 4, 0.0, 0.9 / 4, 0.0]])
    assert all(not v.requires_grad for v in stats.values())


def test_policy_loss_sequence_advantages_broadcast_and_modes():
    # ratio 1 everywhere; A = [1, -1] -> token losses [[-1, -1], [1, pad]]
    mask = torch.tensor([[1, 1], [1, 0]])
    logp = torch.zeros(2, 2)
    close(policy_loss(logp, logp, t([1, -1]), mask)[0], -1 / 3)  # (-1 - 1 + 1) / 3
    close(policy_loss(logp, logp, t([1, -1]), mask, mode="seq-mean-token-mean")[0], 0.0)  # (-1 + 1) / 2
    close(policy_loss(logp, logp, t([1, -1]), mask, mode="seq-mean-token-sum")[0], -0.5)  # (-2 + 1) / 2
    close(policy_loss(logp, logp, t([[1, 1], [-1, 9]]), mask)[0], -1 / 3)  # the same as [b, t] advantages


def test_policy_loss_global_normalizer_over_micro_batches():
    # micro-batch 1: A = 1, two tokens at ratio 1 -> sum -2; micro-batch 2: A = -1, one token -> sum 1.
    # With the global count 3: -2/3 + 1/3 = -1/3, the token mean of the whole batch.
    l1, _ = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), t([1.0]), torch.ones(1, 2), normalizer=3)
    l2, _ = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), t([-1.0]), torch.tensor([[1, 0]]), normalizer=3)
    close(l1, -2 / 3)
    close(l2, 1 / 3)
    close(l1 + l2, -1 / 3)


# ------------------------------------------------------------------------------------------------ KL and entropy
def test_kl_estimates_hand_values():
    logp, ref = t([[math.log(0.5)]]), t([[math.log(0.25)]])  # logp - ref = log 2
    close(kl_estimate(logp, ref, "k1"), [[LN2]])
    close(kl_estimate(logp, ref, "abs"), [[LN2]])
    close(kl_estimate(logp, ref, "mse"), [[0.5 * LN2 ** 2]])  # 0.5 * 0.480453 = 0.240227
    close(kl_estimate(logp, ref, "low_var_kl"), [[0.5 + LN2 - 1]])  # exp(-ln2) - (-ln2) - 1 = 0.193147
    close(kl_estimate(ref, logp, "k3"), [[2 - LN2 - 1]])  # exp(ln2) - ln2 - 1 = 0.306853
    close(kl_estimate(ref, logp, "k1"), [[-LN2]])


def test_kl_is_zero_at_equal_logprobs():
    x = t([[-0.1, -2.0, -7.5]])
    for kind in ("k1", "abs", "mse", "low_var_kl"):
        assert torch.equal(kl_estimate(x, x, kind), torch.zeros(1, 3)), kind


def test_k3_is_clamped_and_finite():
    logp = torch.zeros(1, 2, requires_grad=True)
    kl = kl_estimate(logp, t([[30.0, -30.0]]), "low_var_kl")
    # ref - logp = 30: exp(30) - 31 is far above the clamp -> 10; ref - logp = -30: exp(-30) + 30 - 1 -> 10
    close(kl, [[10.0, 10.0]])
    kl.sum().backward()
    assert torch.equal(logp.grad, torch.zeros(1, 2))  # clamped: no gradient, and no NaN
    with pytest.raises(ValueError, match="low_var_kl"):
        kl_estimate(logp, logp, "k4")


def test_entropy():
    close(entropy_from_logits(torch.full((7,), 3.0)), math.log(7))  # uniform over 7: log 7 = 1.945910
    close(entropy_from_logits(torch.full((2, 3, 7), 1e4)), torch.full((2, 3), math.log(7)).tolist())  # no overflow
    # [10, 0, 0, 0]: Z = e^10 + 3 = 22029.466; p0 = e^10 / Z = 0.9998638; H = log Z - 10 p0 = 10.0001362 - 9.998638
    # = 0.001498 (the other three tokens carry 3 / Z each)
    z = math.exp(10) + 3
    close(entropy_from_logits(t([10.0, 0.0, 0.0, 0.0])), math.log(z) - 10 * math.exp(10) / z)
    close(entropy_from_logits(t([1e4, 0.0, 0.0])), 0.0)  # one-hot limit: exactly peaked, no NaN
    assert entropy_from_logits(t([[1.0, 2.0], [3.0, 4.0]]).to(torch.bfloat16)).dtype == torch.float32


# ------------------------------------------------------------------------------------------------------ critic (PPO)
def test_gae_gamma_one_lambda_one_is_reward_to_go_minus_value():
    rewards = t([[0, 0, 1], [0, 2, 3]])  # the 3 is padding and must not count
    values = t([[0.1, 0.2, 0.3], [0.4, 0.5, 7.0]])
    adv, ret = gae(rewards, values, RAGGED, gamma=1.0, lam=1.0)
    # reward-to-go: row 0 [1, 1, 1], row 1 [2, 2]; minus values
    close(adv, [[0.9, 0.8, 0.7], [1.6, 1.5, 0.0]])
    close(ret, [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])


def test_gae_hand_case_with_padding():
    rewards = t([[0, 0, 1, 3]])  # padding token: reward 3, value 5, ignored
    values = t([[0.5, 0.6, 0.7, 5.0]])
    adv, ret = gae(rewards, values, torch.tensor([[1, 1, 1, 0]]), gamma=0.9, lam=0.8)
    # t=2: delta = 1 + 0.9 * 0 - 0.7 = 0.3; A2 = 0.3 (nothing after the last real token)
    # t=1: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03; A1 = 0.03 + 0.72 * 0.3 = 0.246
    # t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04; A0 = 0.04 + 0.72 * 0.246 = 0.21712
    close(adv, [[0.21712, 0.246, 0.3, 0.0]])
    close(ret, [[0.71712, 0.846, 1.0, 0.0]])  # A + V
    assert not adv.requires_grad


def test_gae_skips_a_hole_in_the_mask():
    adv, _ = gae(t([[0, 9, 1]]), t([[0.5, 9, 0.7]]), torch.tensor([[1, 0, 1]]), gamma=0.9, lam=0.8)
    # t=2: A = 1 - 0.7 = 0.3; t=1 skipped; t=0: delta = 0.9 * 0.7 - 0.5 = 0.13, A = 0.13 + 0.72 * 0.3 = 0.346
    close(adv, [[0.346, 0.0, 0.3]])


# (v, old, R, loss, clipped, gradient): c = 0.2; loss = 0.5 max((v-R)^2, (clip(v, old-c, old+c) - R)^2)
VALUE_CASES = [
    (1.1, 1.0, 1.5, 0.08, 0.0, -0.4),   # v within old +- c: both terms 0.16 -> 0.08; d/dv = v - R = -0.4
    (1.5, 1.0, 1.0, 0.125, 0.0, 0.5),   # max(0.25, (1.2 - 1)^2 = 0.04) = 0.25 -> 0.125, unclipped active
    (1.5, 1.0, 1.6, 0.08, 1.0, 0.0),    # max(0.01, (1.2 - 1.6)^2 = 0.16) -> 0.08, clipped active: no gradient
    (0.5, 1.0, 0.3, 0.125, 1.0, 0.0),   # max((0.5 - 0.3)^2 = 0.04, (0.8 - 0.3)^2 = 0.25) -> 0.125, clipped below
]


@pytest.mark.parametrize("v,old,ret,loss,clipped,grad", VALUE_CASES)
def test_value_clipping(v, old, ret, loss, clipped, grad):
    values = t([[v]]).requires_grad_()
    out, stats = value_loss(values, t([[old]]), t([[ret]]), torch.ones(1, 1), clip=0.2)
    out.backward()
    close(out, loss)
    assert stats["vf_clip_fraction"].item() == clipped
    close(values.grad, [[grad]])


def test_value_loss_batch_with_padding():
    # tokens: the three first VALUE_CASES rows + padding; losses 0.08, 0.125, 0.08 -> mean 0.285 / 3 = 0.095
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = value_loss(t([[1.1, 1.5], [1.5, 50]]), t([[1.0, 1.0], [1.0, 0]]), t([[1.5, 1.0], [1.6, -50]]), mask)
    close(loss, 0.095)
    close(stats["vf_clip_fraction"], 1 / 3)


# --------------------------------------------------------------------------------------------- padding invariance
def test_values_under_padding_change_nothing_including_gradients():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    pad = mask == 0
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(3, 5, generator=g) * 0.3 for k in ("logp", "old", "ref", "adv", "v", "oldv", "ret", "r")}
    junk = {"logp": 80.0, "old": -80.0, "ref": 60.0, "adv": 1e6, "v": 1e4, "oldv": -1e4, "ret": 3e4, "r": 1e5}
    noisy = {k: torch.where(pad, t(junk[k]), x) for k, x in base.items()}

    def run(d):
        logp, v = d["logp"].clone().requires_grad_(), d["v"].clone().requires_grad_()
        out = []
        for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
            loss, stats = policy_loss(logp, d["old"], d["adv"], mask, mode=mode)
            out += [loss, *stats.values()]
            vloss, vstats = value_loss(v, d["oldv"], d["ret"], mask, mode=mode)
            out += [vloss, *vstats.values()]
            out.append(aggregate(kl_estimate(logp, d["ref"]), mask, mode))
        sum(x for x in out if x.requires_grad).backward()
        grads = [logp.grad, v.grad]
        out += [*grads, *gae(d["r"], d["v"], mask, gamma=0.9, lam=0.8), whiten(d["adv"], mask),
                masked_mean(d["adv"], mask, dim=-1), token_advantages(d["adv"][:, 0], mask),
                last_token_rewards(d["r"][:, 0], mask)]
        return [x.detach() for x in out], grads

    (clean, clean_grads), (dirty, _) = run(base), run(noisy)
    for a, b in zip(clean, dirty):
        assert torch.isfinite(b).all() and torch.equal(a, b), (a, b)
    for grad in clean_grads:  # and padding positions receive no gradient at all
        assert torch.equal(grad.masked_select(pad), torch.zeros(int(pad.sum())))

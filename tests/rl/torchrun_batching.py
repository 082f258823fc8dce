"""Run as one process or under torchrun: token-budget micro-batches against the padded path on the same rollouts
(long-tailed response lengths, as MATH8K responses are): per-token old log-probs, the loss (surrogate + KL) and
every gradient agree to 1e-6, and the trainer computes fewer tokens. argv: OVERRIDES..."""

import sys

import torch
import torch.distributed as dist

TOL = 1e-6


def long_tail_rollouts(num: int, vocab: int, seed: int):
    """``num`` responses (groups of 4) with log-normal lengths (median ~12, a few near 100) after 5-8 token
    prompts; rewards / advantages made up."""
    from megatron_octo.rl.rollouts import Rollouts

    g = torch.Generator().manual_seed(seed)
    tokens, prompt_lens, lps = [], [], []
    for i in range(num):
        p = 5 + i // 4 % 4
        n = int(min(100, max(1, torch.empty(1).log_normal_(2.5, 0.9, generator=g).item())))
        seq = torch.randint(3, vocab, (p + n,), generator=g).tolist()
        tokens.append(seq)
        prompt_lens.append(p)
        lps.append((-torch.rand(n, generator=g)).tolist())
    rewards = [float(torch.randint(0, 2, (1,), generator=g).item()) * 2 - 1 for _ in range(num)]
    advantages = torch.randn(num, generator=g).tolist()
    return Rollouts(tokens, prompt_lens, lps, rewards, [False] * num, advantages)


def grads(parts):
    return [p.main_grad.detach().clone() for chunk in parts.model for p in chunk.parameters() if p.requires_grad]


def run(parts, ctx, recipe, minis):
    from megatron_octo.rl import policy
    from megatron_octo.rl.loop import _old_logprobs

    batches = [mb for mini in minis for mb in mini]
    _old_logprobs(parts, ctx, recipe, batches, with_entropy=False)
    per_token = {}
    if ctx.is_last_stage:
        for mb in batches:
            # a made-up reference: a function of each token's log-prob (the same for every layout)
            mb.ref_logprobs = (mb.old_logprobs * 1.1 + 0.02) * mb.mask
            for i, j in enumerate(mb.rows):
                m = mb.mask[i].bool()
                per_token[j] = mb.old_logprobs[i][m]
    # perturb the policy's view (ratio != 1) by using the first mini-batch's update loss on every mini-batch
    out = []
    for mini in minis:
        for chunk in parts.model:
            chunk.zero_grad_buffer()
        outputs = policy.run_schedule(parts, ctx, policy.loss_step(ctx, recipe.rl, recipe.model.vocab_size), mini,
                                      forward_only=False)
        stats = policy.reduce_logs(outputs, ctx, ["pg_loss", "kl"])
        out.append((stats, grads(parts)))
    computed = sum(mb.tokens.numel() for mb in batches)
    return per_token, out, computed


def main(overrides) -> None:
    from megatron_octo import parallel
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.rl import rollouts as ro
    from megatron_octo.training.build import build

    recipe = load_recipe("tiny-cpu-grpo", ["rl.init=unused", "rl.prompts.path=unused", "rl.kl_coef=0.1",
                                           "rl.prompts_per_step=16", "rl.mini_batch_prompts=8",
                                           "rl.rollout.n=4", "train.micro_batch=4", *overrides])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        parts = build(recipe, ctx, 10)
        r = long_tail_rollouts(64, recipe.model.vocab_size, seed=7)
        padded = ro.step_batches(r, 2, recipe.train.micro_batch, None, 0, ctx.device)
        budget = ro.step_batches(r, 2, recipe.train.micro_batch, 128, 0, ctx.device)
        assert all(mb.tokens.numel() <= 128 or mb.tokens.shape[0] == 1 for mini in budget for mb in mini)
        assert sorted(j for mb in budget[0] for j in mb.rows) == list(range(32))  # same responses per update
        lp_a, out_a, computed_a = run(parts, ctx, recipe, padded)
        lp_b, out_b, computed_b = run(parts, ctx, recipe, budget)
        if "--packed" in sys.argv:  # THD rows (per-sequence attention) in place of the token-budget padding
            packed = ro.step_batches(r, 2, recipe.train.micro_batch, 128, 0, ctx.device, packing=True)
            assert all(mb.packed is not None and mb.tokens.shape[0] == 1 for mini in packed for mb in mini)
            lp_b, out_b, computed_b = run(parts, ctx, recipe, packed)
            budget = packed
        worst = {"logprob": 0.0, "loss": 0.0, "grad": 0.0}
        for j in lp_a:
            # relative: log-probs reach -10 where fp32 rounding alone is 1e-6
            rel = (lp_a[j] - lp_b[j]).abs() / lp_a[j].abs().clamp(min=1.0)
            worst["logprob"] = max(worst["logprob"], float(rel.max()))
        for (stats_a, g_a), (stats_b, g_b) in zip(out_a, out_b):
            for key in stats_a:
                worst["loss"] = max(worst["loss"], abs(stats_a[key] - stats_b[key]))
            for x, y in zip(g_a, g_b):
                worst["grad"] = max(worst["grad"], float((x - y).abs().max()))
            assert any(float(x.abs().max()) > 1e-4 for x in g_a), "no gradient: the comparison would be empty"
        assert all(v <= TOL for v in worst.values()), worst
        assert computed_b < 0.6 * computed_a, (computed_a, computed_b)
        print(f"rank {dist.get_rank()}: worst differences {worst}; computed tokens padded {computed_a}, "
              f"token budget {computed_b}; padding share {ro.padding_share(r, padded):.3f} -> "
              f"{ro.padding_share(r, budget):.3f}", flush=True)
        dist.barrier()
        if ctx.is_main:
            print("BATCHING OK")
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a != "--packed"])

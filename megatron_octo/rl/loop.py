"""``octo rl``: GRPO on Megatron-Core with a rollout engine, as named, timed phases per step:

    generate -> reward -> advantages -> log-probs (old, reference) -> update -> weight sync -> log / checkpoint

Each data-parallel replica has one rollout rank (its model-parallel rank 0) holding an engine; it samples the
replica's share of the step's prompts, scores them, computes group-normalized advantages and hands the rollouts to
the other ranks of its model-parallel group. The trainer (the same Megatron-Core pieces as pre-training) recomputes
the log-probs of the sampled tokens, makes ``prompts_per_step / mini_batch_prompts`` clipped-surrogate updates,
and the new weights go to the engine in memory. A step's prompts and sampling seeds are functions of the step
number, so a resumed run repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.config.validate import max_response_tokens
from megatron_octo.parallel import ParallelContext
from megatron_octo.rl import policy
from megatron_octo.rl import rollouts as ro
from megatron_octo.rl.critic import (
    CRITIC_DIR,
    build_critic,
    critic_recipe,
    critic_update,
    ppo_advantages,
    restore_critic,
    value_step,
)
from megatron_octo.rl.prompts import build_problems, shard, step_prompts
from megatron_octo.rl.setup import (
    COLLECTIVE_TIMEOUT_S,
    RLSetupError,
    load_tokenizer,
    make_engine,
    make_reference,
    make_weight_sync,
    materialize,
    rollout_reward,
    starting_point,
)
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.build import build
from megatron_octo.training.metrics import MetricsWriter, truncate_metrics
from megatron_octo.training.resume import Start
from megatron_octo.training.stage import CheckpointManager, Companion, StageSpec, metrics_writer, resume


class Phases:
    """Wall time of each named phase of a step."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class RLMetricsWriter(MetricsWriter):
    """metrics.jsonl / TensorBoard as in training, with an RL progress line."""

    def _fields(self, record: Dict[str, float]) -> str:
        return (f"reward {record['reward_mean']:+.3f} | acc {100 * record['accuracy']:.1f}% | len "
                f"{record['response_length_mean']:.0f} (max {record['response_length_max']:.0f}) | clip "
                f"{record['clip_fraction']:.3f} | mismatch {record['logprob_mismatch']:.4f} | "
                f"{record['tokens_per_s']:.0f} gen tokens/s")


def _sync(parts, syncer, engine) -> None:
    """Trainer shards -> the engine(s) of this model-parallel group (collective over the group; ``rl.sync``)."""
    syncer(parts.model, engine)


def _rollouts(recipe: RecipeConfig, ctx: ParallelContext, engine, problems, step: int, reward_fn,
              phases: "Phases") -> ro.Rollouts:
    """The replica's rollouts of ``step`` (generated on its rollout rank, then shared)."""
    rl, r = recipe.rl, recipe.rl.rollout
    result = None
    if engine is not None:
        chosen = step_prompts(len(problems), step, rl.prompts_per_step, rl.prompts.shuffle_seed)
        mine = [problems[i] for i in shard(chosen, ctx.dp_rank, ctx.dp)]
        result = ro.collect(engine, mine, n=r.n, temperature=r.temperature, top_p=r.top_p,
                            max_tokens=max_response_tokens(recipe, step), stop=r.stop,
                            seed=recipe.train.seed * 1_000_003 + step * 1009 + ctx.dp_rank,
                            reward_fn=reward_fn, scale_by_std=rl.scale_advantages_by_std, phase=phases)
        engine.sleep()
    return ro.share(result, ctx.pgs.mp)


def _old_logprobs(parts, ctx, recipe, batches, *, with_entropy: bool):
    """Fill ``old_logprobs`` of each micro-batch on last-stage ranks; return the per-micro-batch outputs."""
    step_func = policy.logprob_step(ctx, recipe.rl.rollout.temperature, with_entropy, recipe.model.vocab_size)
    outputs = policy.run_schedule(parts, ctx, step_func, batches, forward_only=True)
    if ctx.is_last_stage:
        for mb, out in zip(batches, outputs):
            mb.old_logprobs = out["logprobs"]
    return outputs


def _trainer_stats(batches, outputs, ctx) -> Dict[str, float]:
    """Log-prob mismatch (mean over response tokens of exp|engine - trainer|) and entropy, global."""
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    if ctx.is_last_stage and ctx.tp_rank == 0:
        for mb, out in zip(batches, outputs):
            diff = (mb.engine_logprobs - out["logprobs"]).abs().exp()
            sums[0] += (diff * mb.mask).sum()
            sums[1] += (out["entropy"] * mb.mask).sum()
            sums[2] += mb.mask.sum()
    dist.all_reduce(sums)
    return {"logprob_mismatch": float(sums[0] / sums[2]), "entropy": float(sums[1] / sums[2])}


def _rollout_stats(r: ro.Rollouts, ctx: ParallelContext) -> Dict[str, float]:
    """Reward, accuracy, lengths, truncation and the step's tokens (prompts + responses: what the update trains on,
    recorded in checkpoints) over every replica's rollouts."""
    sums = torch.zeros(6, dtype=torch.float64, device=ctx.device)
    longest = torch.zeros(1, dtype=torch.float64, device=ctx.device)
    if ctx.tp_rank == 0 and ctx.pp_rank == 0:
        lens = r.response_lens
        sums += torch.tensor([sum(r.rewards), sum(x > 0 for x in r.rewards), len(lens), sum(lens), sum(r.truncated),
                              sum(len(t) for t in r.tokens)], dtype=torch.float64, device=ctx.device)
        longest[0] = max(lens)
    dist.all_reduce(sums)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    n = float(sums[2])
    return {"reward_mean": float(sums[0]) / n, "accuracy": float(sums[1]) / n,
            "response_length_mean": float(sums[3]) / n, "response_length_max": float(longest[0]),
            "truncated_fraction": float(sums[4]) / n, "responses": n, "generated_tokens": float(sums[3]),
            "trained_tokens": float(sums[5])}


def _updates(parts, ctx, recipe, minis, critic=None) -> Dict[str, float]:
    """``rl.epochs`` passes over the mini-batches (``prompts_per_step / mini_batch_prompts`` policy and critic
    updates); stats averaged over the updates."""
    rl = recipe.rl
    stats: List[Dict[str, float]] = []
    for _ in range(rl.epochs):
        for mini in minis:
            result = policy.update(parts, ctx, rl, mini, recipe.model.vocab_size)
            if critic is not None:
                result.update(critic_update(critic, ctx, rl.value_clip, mini))
            stats.append(result)
    return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}


def rl_step(step: int, recipe, ctx, parts, engine, problems, reward_fn, reference, pad_id: int,
            critic=None, syncer=None) -> Dict[str, Any]:
    """One RL step (``step`` is 0-based); returns its metrics (the same on every rank) and ``examples``."""
    phases = Phases()
    r = _rollouts(recipe, ctx, engine, problems, step, reward_fn, phases)
    minis = ro.step_batches(r, recipe.rl.prompts_per_step // recipe.rl.mini_batch_prompts, recipe.train.micro_batch,
                            recipe.rl.max_tokens_per_micro_batch, pad_id, ctx.device)
    batches = [mb for mini in minis for mb in mini]
    with phases("logprobs"):
        outputs = _old_logprobs(parts, ctx, recipe, batches, with_entropy=True)
        if reference is not None:
            ref_step = policy.logprob_step(ctx, recipe.rl.rollout.temperature, False, recipe.model.vocab_size)
            ref_out = policy.run_schedule(reference, ctx, ref_step, batches, forward_only=True)
            for mb, out in zip(batches, ref_out if ctx.is_last_stage else []):
                mb.ref_logprobs = out["logprobs"]
    stats: Dict[str, Any] = _trainer_stats(batches, outputs, ctx)
    stats["padding_share"] = ro.padding_share(r, minis)
    if critic is not None:
        with phases("values"):
            values = policy.run_schedule(critic, ctx, value_step(ctx), batches, forward_only=True)
            if ctx.is_last_stage:
                ppo_advantages(batches, values, recipe.rl.gamma, recipe.rl.lam)
    with phases("update"):
        stats.update(_updates(parts, ctx, recipe, minis, critic))
        stats["lr"] = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step(increment=1)
        if critic is not None:
            critic.scheduler.step(increment=1)
    with phases("weight_sync"):
        _sync(parts, syncer or make_weight_sync(recipe, ctx, engine), engine)
    stats.update(_rollout_stats(r, ctx))
    stats["examples"] = r.examples
    stats.update({f"time_{k}_s": v for k, v in phases.seconds.items()})
    stats["step_time_s"] = sum(phases.seconds.values())
    return stats


def _record(step: int, stats: Dict[str, float]) -> Dict[str, float]:
    stats = {k: v for k, v in stats.items() if k != "examples"}
    rec = {"step": step + 1, "loss": stats["pg_loss"], **stats}
    # generation time of the slowest replica is what bounds the step; rank 0's is the one at hand
    rec["tokens_per_s"] = stats["generated_tokens"] / max(stats.get("time_generate_s", 0.0), 1e-9)
    return rec


RL_STAGE = StageSpec(command="rl", summary_file="rl_summary.json",
                     run_files=("init", "validation", "hf", "critic_checkpoints", "samples.jsonl"),
                     collective_timeout_s=COLLECTIVE_TIMEOUT_S)


def prepare_rl(recipe: RecipeConfig, run_dir: Path, ctx: ParallelContext, reward_fn: Optional[ro.RewardFn] = None,
               log=print) -> Callable[[], Dict[str, Any]]:
    """Set up ``recipe``'s RL stage in ``run_dir`` (resuming from its newest checkpoint when there is one) and return
    the session that runs its steps. Everything that can refuse the recipe (tokenizer, prompts, reward) is checked
    before ``RUN_DIR/init`` is written. ``reward_fn`` replaces the math reward (tests use toy tasks)."""
    if ctx.cp > 1:
        raise RLSetupError("context parallelism is not supported by octo rl: set parallel.cp=1")
    iters = recipe.train.iters
    if iters is None:
        raise RLSetupError("octo rl needs train.iters (RL steps)")
    run_dir = Path(run_dir)
    point = starting_point(recipe)
    tokenizer = load_tokenizer(recipe, point)
    problems = build_problems(recipe.rl.prompts, tokenizer, log if ctx.is_main else (lambda s: None))
    reward_fn = reward_fn or rollout_reward(recipe.rl.reward)
    start_recipe = materialize(recipe, point, run_dir, ctx, log)
    parts = build(start_recipe, ctx, iters)
    start = resume(start_recipe, run_dir, parts, iters, ctx, RL_STAGE, log)
    engine = make_engine(recipe, ctx, tokenizer, run_dir) if dist.get_rank(ctx.pgs.mp) == 0 else None
    reference = make_reference(start_recipe, ctx, iters) if recipe.rl.kl_coef > 0 else None
    critic = None
    if recipe.rl.algorithm == "ppo":
        critic = build_critic(start_recipe, ctx, iters)
        restore_critic(critic, run_dir, start.step, ckpt.resolve(str(start_recipe.checkpoint.load)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    syncer = make_weight_sync(recipe, ctx, engine)
    return lambda: _loop(recipe, run_dir, ctx, parts, start, engine, problems, reward_fn, reference, pad_id,
                         tokenizer, log, critic, syncer)


def run_rl(recipe: RecipeConfig, run_dir: Path, ctx: ParallelContext, reward_fn: Optional[ro.RewardFn] = None,
           log=print) -> Dict[str, Any]:
    """Set up and run ``recipe``'s RL stage into ``run_dir``; returns a summary."""
    return prepare_rl(recipe, run_dir, ctx, reward_fn, log)()


def _loop(recipe, run_dir, ctx, parts, start: Start, engine, problems, reward_fn, reference, pad_id, tokenizer,
          log, critic=None, syncer=None) -> Dict[str, Any]:
    from megatron_octo.rl.validation import validate_policy

    iters = recipe.train.iters
    if ctx.is_main:
        truncate_metrics(run_dir / "samples.jsonl", start.step)
    writer = metrics_writer(ctx, run_dir, iters, recipe, RLMetricsWriter)
    rl = recipe.rl
    # the critic saves synchronously, before the policy: a complete policy checkpoint implies its critic's
    companions = [Companion(CRITIC_DIR, critic_recipe(recipe), critic)] if critic is not None else []
    manager = CheckpointManager(recipe, run_dir, ctx, start, iters, RL_STAGE, companions=companions, log=log,
                                layout_extra={"rl": {"algorithm": rl.algorithm,
                                                     "responses_per_step": rl.prompts_per_step * rl.rollout.n}})
    history: List[Dict[str, float]] = []
    try:
        with manager:
            syncer = syncer or make_weight_sync(recipe, ctx, engine)
            _sync(parts, syncer, engine)
            for step in manager.steps():
                stats = rl_step(step, recipe, ctx, parts, engine, problems, reward_fn, reference, pad_id, critic,
                                syncer)
                record = _record(step, stats)
                v = rl.validation
                if v.interval and ((step + 1) % v.interval == 0 or step + 1 == iters):
                    record.update(validate_policy(recipe, ctx, engine, tokenizer, run_dir, step + 1, log))
                history.append(record)
                if writer is not None:
                    writer.write(record)
                    _write_examples(run_dir, step + 1, stats["examples"])
                manager.step_done(step + 1, parts, int(stats["trained_tokens"]))
    finally:
        if writer is not None:
            writer.close()
        if engine is not None:
            engine.shutdown()
    return {**manager.summary(), **_summary(history)}


def _write_examples(run_dir: Path, step: int, examples: List[dict]) -> None:
    """Append this step's example responses to ``RUN_DIR/samples.jsonl`` (a resume first drops later steps)."""
    import json

    with open(run_dir / "samples.jsonl", "a") as f:
        for example in examples:
            f.write(json.dumps({"step": step, **example}) + "\n")


def _summary(history: List[Dict[str, float]]) -> Dict[str, Any]:
    def mean(key: str, part: List[Dict[str, float]]) -> Optional[float]:
        return sum(r[key] for r in part) / len(part) if part else None

    return {"reward_first": mean("reward_mean", history[:5]), "reward_last": mean("reward_mean", history[-5:]),
            "accuracy_first": mean("accuracy", history[:5]), "accuracy_last": mean("accuracy", history[-5:])}

"""The PPO critic: the policy's architecture with a scalar value head in place of the output layer, on the same
Megatron-Core layout (TP x PP x DP), initialized from the starting policy's weights, with its own optimizer.

The value of label position t (the state after token t) is read at the same position as the policy's log-prob of
token t + 1, so values line up with the response mask [b, L-1].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.parallel import ParallelContext
from megatron_octo.rl import algorithms as alg
from megatron_octo.rl.policy import model_inputs, to_rows
from megatron_octo.training import checkpoint as ckpt

CRITIC_DIR = "critic_checkpoints"
"""``RUN_DIR/critic_checkpoints``: the critic's checkpoints, saved just before the policy's of the same step."""


class ValueHead(torch.nn.Module):
    """hidden [s, b, h] -> values [s, b, 1]; zero-initialized so every value starts at 0. Called like the output
    layer it replaces (``weight`` / ``runtime_gather_output`` are ignored)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, hidden_size))
        self.sequence_parallel = False

    def forward(self, hidden, weight=None, runtime_gather_output=None):
        return torch.nn.functional.linear(hidden, self.weight.to(hidden.dtype)), None


def critic_recipe(recipe: RecipeConfig) -> RecipeConfig:
    """The policy's recipe for the critic: untied output layer (replaced by the head), constant ``rl.critic_lr``."""
    model = dataclasses.replace(recipe.model, tie_word_embeddings=False)
    schedule = dataclasses.replace(
        recipe.schedule, lr=recipe.rl.critic_lr, min_lr=recipe.rl.critic_lr, style="constant", warmup_iters=0
    )
    return dataclasses.replace(recipe, model=model, schedule=schedule)


def _add_head(model, tcfg) -> None:
    if model.post_process:
        model.output_layer = ValueHead(tcfg.hidden_size)


def build_critic(start: RecipeConfig, ctx: ParallelContext, iters: int):
    """Critic chunks (DDP), optimizer and P2P communicator; weights not loaded yet."""
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    from megatron_octo.training.build import build_model, build_optimizer

    recipe = critic_recipe(start)
    chunks, tcfg, dtype = build_model(recipe, ctx, adapt=_add_head)
    optimizer, scheduler = build_optimizer(recipe, chunks, ctx, dtype, iters)
    return SimpleNamespace(
        model=chunks, optimizer=optimizer, scheduler=scheduler, p2p=P2PCommunicator(pp_group=ctx.pgs.pp, config=tcfg)
    )


def load_trunk(critic, source: Path) -> None:
    """Every critic tensor but the value head from the policy checkpoint ``source`` (collective)."""
    from megatron.core import dist_checkpointing

    model = ckpt.unwrap(critic.model[0])
    request = {k: v for k, v in model.sharded_state_dict().items() if not k.startswith("output_layer.")}
    state = dist_checkpointing.load(request, str(source))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("output_layer.") and "_extra_state" not in k]
    if missing:
        raise ckpt.CheckpointError(f"{source} lacks critic tensors {missing[:3]}")
    critic.optimizer.reload_model_params()


def restore_critic(critic, run_dir: Path, step: int, source: Path) -> None:
    """At a resume (``step`` > 0) the critic checkpoint of that step; at a fresh start the policy's weights."""
    if step == 0:
        load_trunk(critic, source)
        return
    own = ckpt.iter_dir(run_dir / CRITIC_DIR, step)
    if not own.is_dir():
        raise ckpt.CheckpointError(
            f"the run resumes at step {step} but {own} is missing: the critic and policy "
            "checkpoints must come from the same step"
        )
    ckpt.load(own, critic, with_optimizer=True)
    critic.scheduler.step(increment=step)


def value_step(ctx: ParallelContext):
    """``forward_step_func`` returning each micro-batch's values [b, L-1] on the last stage."""

    def forward_step(data_iterator: Iterator, model):
        mb = next(data_iterator)
        inputs, _, kwargs = model_inputs(mb)
        output = model(inputs, None, None, **kwargs)  # last stage: [b, s, 1]

        def collect(values):
            out = {"values": to_rows(values.detach().float().squeeze(-1), mb)}
            return values.new_zeros(()), torch.tensor(1, dtype=torch.int, device=values.device), out

        return output, collect

    return forward_step


def value_loss_step(ctx: ParallelContext, clip: float):
    """``forward_step_func`` of the critic update: clipped value loss as a token sum and a token count."""

    def forward_step(data_iterator: Iterator, model):
        mb = next(data_iterator)
        inputs, _, kwargs = model_inputs(mb)
        output = model(inputs, None, None, **kwargs)

        def loss_func(values):
            values = to_rows(values.float().squeeze(-1), mb)  # [b, L-1]
            loss, stats = alg.value_loss(
                values, mb.old_values, mb.returns, mb.mask, clip=clip, mode="token-mean", normalizer=1.0
            )
            tokens = mb.mask.sum()
            logs = {
                "value_loss": torch.stack([loss.detach(), tokens]),
                "vf_clip_fraction": torch.stack([stats["vf_clip_fraction"].detach() * tokens, tokens]),
            }
            return loss, tokens.to(torch.int), logs

        return output, loss_func

    return forward_step


def critic_update(critic, ctx: ParallelContext, clip: float, micro_batches) -> dict:
    """One critic optimizer update over a mini-batch."""
    from megatron_octo.rl.policy import optimizer_update

    return optimizer_update(
        critic, ctx, value_loss_step(ctx, clip), micro_batches, ["value_loss", "vf_clip_fraction"], prefix="critic_"
    )


def ppo_advantages(batches, outputs, gamma: float, lam: float) -> None:
    """On last-stage ranks: old values, GAE advantages (whitened over this rank's responses) and returns of each
    micro-batch, from the critic's ``outputs`` and the responses' rewards on their last tokens."""
    advantages = []
    for mb, out in zip(batches, outputs):
        mb.old_values = out["values"]
        rewards = alg.last_token_rewards(mb.rewards, mb.mask)  # [b, L-1]
        adv, mb.returns = alg.gae(rewards, mb.old_values, mb.mask, gamma=gamma, lam=lam)
        advantages.append(adv)
    # flattened: token-budget micro-batches differ in length; the statistics are over all real tokens either way
    whitened = alg.whiten(
        torch.cat([a.reshape(-1) for a in advantages]), torch.cat([mb.mask.reshape(-1) for mb in batches])
    )
    for mb, adv in zip(batches, whitened.split([mb.mask.numel() for mb in batches])):
        mb.advantages = adv.view(mb.mask.shape)

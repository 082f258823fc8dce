"""Held-out validation loss during training, as Megatron-LM computes it.

Every ``train.eval_interval`` steps, and once more at the end of the stage, the model runs forward only (no
gradients, eval mode) over ``train.eval_iters`` global batches of the validation data; the mean token loss over
them is logged as ``val_loss`` (and ``val_ppl``) in that step's metrics record. Consecutive evaluations read
consecutive validation samples (evaluation ``k`` reads batches ``k * eval_iters ...``), the validation dataset
holding ``(iters // eval_interval + 1) * eval_iters * global_batch`` samples: Megatron-LM's accounting. Which
samples an evaluation reads is a function of its step, so a resumed run logs what the uninterrupted one does.

Validation data: for ``data.kind=blend`` the validation split of the blend (``data.split``'s second share of each
source's documents, built by Megatron-Core's BlendedMegatronDatasetBuilder with the training blend); none when
that share is 0. For ``synthetic`` data a held-out stream of the same generator (``SyntheticTokens.held_out``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.data.loader import step_loader
from megatron_octo.parallel import ParallelContext
from megatron_octo.training.params import make_params_current


def num_evaluations(recipe: RecipeConfig, iters: int) -> int:
    """How many evaluations a stage of ``iters`` steps runs at most (Megatron-LM's count for its valid set)."""
    return iters // recipe.train.eval_interval + 1 if recipe.train.eval_interval else 0


def eval_index(recipe: RecipeConfig, step: int, iters: int) -> Optional[int]:
    """Which evaluation runs after ``step`` steps (1-based): ``step // eval_interval`` at interval multiples, the
    last index at the stage's end; None when none runs then."""
    t = recipe.train
    if not t.eval_interval or not t.eval_iters:
        return None
    if step % t.eval_interval == 0:
        return step // t.eval_interval - 1
    return num_evaluations(recipe, iters) - 1 if step == iters else None


def validation_samples(recipe: RecipeConfig, iters: int) -> int:
    return num_evaluations(recipe, iters) * recipe.train.eval_iters * recipe.train.global_batch


class Validator:
    """Runs the evaluations of a stage (collective: every rank calls ``maybe_evaluate`` after every step).

    ``forward_step``: the training's ``forward_step_func`` (the same loss); ``reduce(losses, ctx)``: the global
    mean token loss of the schedules' outputs (``training.loop.global_mean_loss``); ``collector``: the stage's
    ``ManualGC``.
    """

    def __init__(
        self,
        recipe: RecipeConfig,
        ctx: ParallelContext,
        dataset,
        iters: int,
        forward_step: Callable,
        reduce: Callable,
        collector=None,
    ):
        self.recipe, self.ctx, self.dataset, self.iters, self.collector = recipe, ctx, dataset, iters, collector
        self.forward_step, self.reduce = forward_step, reduce

    def maybe_evaluate(self, parts, step: int) -> Optional[dict]:
        """``{"val_loss", "val_ppl"}`` when an evaluation is due after ``step`` steps, else None."""
        index = eval_index(self.recipe, step, self.iters)
        if index is None or self.dataset is None:
            return None
        if self.collector is not None:
            self.collector.before_eval()
        loss = self.evaluate(parts, index)
        if self.collector is not None:
            self.collector.after_eval()
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 20.0))}

    def evaluate(self, parts, index: int) -> float:
        """Mean token loss over evaluation ``index``'s ``eval_iters`` global batches, on every rank."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        t, ctx = self.recipe.train, self.ctx
        first = index * t.eval_iters
        loader = step_loader(self.dataset, self.recipe, ctx, first, first + t.eval_iters)
        make_params_current(parts.model)  # as Megatron-LM before evaluating (its pre-hooks are off meanwhile)
        for chunk in parts.model:
            chunk.eval()
        losses = []
        try:
            with torch.no_grad():
                for batch_index in range(first, first + t.eval_iters):
                    batches = loader.step(batch_index)
                    losses += get_forward_backward_func()(
                        forward_step_func=self.forward_step,
                        data_iterator=iter(batches),
                        model=parts.model,
                        num_microbatches=len(batches),
                        seq_length=t.seq_len // ctx.cp,
                        micro_batch_size=t.micro_batch,
                        forward_only=True,
                        p2p_communicator=parts.p2p,
                        pg_collection=ctx.pgs,
                    )
        finally:
            loader.close()
            for chunk in parts.model:
                chunk.train()
        return self.reduce(losses, ctx)

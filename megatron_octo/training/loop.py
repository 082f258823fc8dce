"""The training loop: Megatron-Core pipeline schedules over micro-batches, one optimizer step per iteration.

Loss convention: per-token (``calculate_per_token_loss``). Each micro-batch returns its summed token loss and
token count; Megatron-Core divides the gradients by the step's total token count across data-parallel ranks, so
the step's loss and gradients are the mean over all tokens of the global batch, whatever the layout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.config.validate import train_iters
from megatron_octo.data.loader import StepLoader, step_loader
from megatron_octo.data.synthetic import SyntheticTokens
from megatron_octo.errors import OctoError
from megatron_octo.parallel import ParallelContext
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.build import Components, build
from megatron_octo.training.flops import flops_per_token, mfu, peak_flops
from megatron_octo.training.manual_gc import manual_gc
from megatron_octo.training.resume import Start
from megatron_octo.training.stage import TRAIN_STAGE, CheckpointManager, metrics_writer, resume
from megatron_octo.training.validation import Validator, validation_samples


@dataclass
class StepResult:
    """What one optimizer step measured (identical on every rank)."""

    loss: float
    grad_norm: float
    lr: float
    seconds: float
    skipped: bool = False
    """The loss was not finite, so the update was skipped."""
    overflow: bool = False
    """fp16: the scaled gradients overflowed, so the loss scaler skipped the update (and lowered the scale)."""
    loss_scale: float = 1.0
    """The loss scale the step's backward used (fp16's dynamic scale; 1 in fp32 and bf16)."""


class TrainingDiverged(OctoError, RuntimeError):
    """Too many consecutive non-finite losses; the run stopped without saving."""


def _loss_func(per_token_loss: torch.Tensor):
    """``per_token_loss``: ``[b, s]`` from GPTModel given labels. Returns (sum, count, logged [sum, count])."""
    loss_sum = per_token_loss.float().sum()
    num_tokens = torch.tensor(per_token_loss.numel(), dtype=torch.int, device=per_token_loss.device)
    return loss_sum, num_tokens, {"lm loss": torch.stack([loss_sum.detach(), num_tokens.float()])}


def _cp_slice(inputs: torch.Tensor, labels: torch.Tensor, ctx: ParallelContext):
    """With context parallelism each rank keeps its (load-balanced) chunks of the sequence."""
    if ctx.cp == 1:
        return inputs, labels
    from megatron.core.utils import get_batch_on_this_cp_rank

    batch = get_batch_on_this_cp_rank({"tokens": inputs, "labels": labels}, cp_group=ctx.pgs.cp)
    return batch["tokens"], batch["labels"]


def make_forward_step(ctx: ParallelContext):
    """The ``forward_step_func`` Megatron-Core's schedules call once per micro-batch."""

    def forward_step(data_iterator: Iterator[torch.Tensor], model: torch.nn.Module):
        tokens = next(data_iterator)  # [b, s + 1], already on the device (data.loader)
        inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # [b, s] each
        inputs, labels = _cp_slice(inputs, labels, ctx)
        output = model(inputs, None, None, labels=labels)  # last stage: [b, s] token losses
        return output, _loss_func

    return forward_step


def global_mean_loss(losses_reduced: List[Dict[str, torch.Tensor]], ctx: ParallelContext) -> float:
    """Mean token loss of the whole global batch, on every rank.

    Only last-stage ranks see losses; the TP ranks of a stage see the same numbers, so one of them (tp_rank 0)
    contributes its [sum, count] per CP and DP rank, summed over the world.
    """
    totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    if ctx.is_last_stage and ctx.tp_rank == 0:
        for item in losses_reduced:
            totals += item["lm loss"].to(device=ctx.device, dtype=torch.float64)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1])


def train_step(
    step: int, parts: Components, loader: StepLoader, recipe: RecipeConfig, ctx: ParallelContext
) -> StepResult:
    """One optimizer step (``step`` is 0-based) over the global batch; ``loader`` serves its micro-batches."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    t = recipe.train
    start = time.perf_counter()
    parts.optimizer.zero_grad()
    for chunk in parts.model:
        chunk.zero_grad_buffer()
    batches = loader.step(step)
    lr = parts.optimizer.param_groups[0]["lr"]
    losses = get_forward_backward_func()(
        forward_step_func=make_forward_step(ctx),
        data_iterator=iter(batches),
        model=parts.model,
        num_microbatches=len(batches),
        seq_length=t.seq_len // ctx.cp,
        micro_batch_size=t.micro_batch,
        forward_only=False,
        p2p_communicator=parts.p2p,
        pg_collection=ctx.pgs,
    )
    loss = global_mean_loss(losses, ctx)  # the same on every rank, so every rank takes the same branch
    skipped = not math.isfinite(loss)
    grad_norm, overflow = float("nan"), False
    loss_scale = float(parts.optimizer.get_loss_scale())
    if not skipped:
        updated, norm, _ = parts.optimizer.step()  # fp16: False when the loss scaler found inf/nan gradients
        overflow = not updated
        grad_norm = float(norm or 0.0) if updated else float("nan")
    # The schedule advances either way: the LR stays a function of the step, as on resume.
    parts.scheduler.step(increment=1)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return StepResult(
        loss=loss,
        grad_norm=grad_norm,
        lr=lr,
        seconds=time.perf_counter() - start,
        skipped=skipped,
        overflow=overflow,
        loss_scale=loss_scale,
    )


def make_dataset(recipe: RecipeConfig):
    """The stage's indexable token dataset: item ``i`` is sample ``i`` in training order, a ``[seq_len + 1]``
    LongTensor. ``blend`` builds Megatron-Core's blended GPTDataset for ``iters * global_batch`` samples; every
    rank must call this (rank 0 builds the index caches first)."""
    return make_datasets(recipe, train_iters(recipe), validation=False)[0]


def make_datasets(recipe: RecipeConfig, iters: int, validation: bool = True) -> tuple:
    """(training dataset, validation dataset or None): see ``make_dataset`` and ``training.validation`` (a blend
    has validation data only when ``data.split`` holds some out; synthetic data has a held-out stream)."""
    valid_samples = validation_samples(recipe, iters) if validation else 0
    if recipe.data.kind == "synthetic":
        args: Dict[str, Any] = dict(
            vocab_size=recipe.model.vocab_size, seq_len=recipe.train.seq_len, seed=recipe.train.seed
        )
        return SyntheticTokens(**args), (SyntheticTokens(**args, held_out=True) if valid_samples else None)
    if recipe.data.kind == "blend":
        from megatron_octo.data.blend import build_blend_splits

        return build_blend_splits(recipe, iters * recipe.train.global_batch, valid_samples)
    raise NotImplementedError(f"data.kind={recipe.data.kind!r} is not available: use synthetic or blend")


def _check_divergence(history: List[StepResult], limit: int, run_dir: Path) -> None:
    """Stop, without saving, once the last ``limit`` steps all had non-finite losses."""
    recent = history[-limit:]
    if len(recent) == limit and all(r.skipped for r in recent):
        latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
        raise TrainingDiverged(
            f"the loss was not finite for {limit} consecutive steps (updates skipped): the run stopped and {kept}; "
            f"lower schedule.lr or check the data, then resume"
        )


def prepare_training(
    recipe: RecipeConfig, run_dir: Path, ctx: ParallelContext, parts: Optional[Components] = None
) -> Callable[[], Dict[str, Any]]:
    """Build the stage and restore where it starts (everything that can refuse the recipe); returns the session
    that trains to the last iteration (``stage.run_stage`` calls both)."""
    iters = train_iters(recipe)
    parts = parts or build(recipe, ctx, iters)
    start = resume(recipe, run_dir, parts, iters, ctx, TRAIN_STAGE)
    dataset, valid = make_datasets(recipe, iters)
    if ctx.is_main and valid is None and recipe.train.eval_interval and recipe.train.eval_iters:
        print(
            f"[octo] no validation loss: data.split={recipe.data.split} holds no documents out for validation "
            f"(e.g. data.split=98,1,1 does)",
            flush=True,
        )
    return lambda: _train(recipe, run_dir, ctx, parts, start, dataset, valid, iters)


def run_training(
    recipe: RecipeConfig, run_dir: Path, ctx: ParallelContext, parts: Optional[Components] = None
) -> Dict[str, Any]:
    """Train ``recipe`` to its last iteration, starting where ``resume.restore`` says; the main rank writes
    ``run_dir/metrics.jsonl``; checkpoints go to ``run_dir/checkpoints``. Returns a summary; its ``exit_code`` is
    ``REQUEUE_EXIT_CODE`` when a stop signal ended the run (after saving) before its last step."""
    return prepare_training(recipe, run_dir, ctx, parts)()


def _train(
    recipe: RecipeConfig,
    run_dir: Path,
    ctx: ParallelContext,
    parts: Components,
    start: Start,
    dataset,
    valid,
    iters: int,
) -> Dict[str, Any]:
    tokens_per_step = recipe.train.global_batch * recipe.train.seq_len
    writer = metrics_writer(ctx, run_dir, iters, recipe)
    peak = peak_flops(ctx.device, fp8=bool(getattr(parts.config, "fp8", None)))  # what precision.fp8 resolved to
    history: List[StepResult] = []
    manager = CheckpointManager(recipe, run_dir, ctx, start, iters, TRAIN_STAGE)
    collector = manual_gc(recipe)
    loader = None
    try:
        with manager:
            loader = step_loader(dataset, recipe, ctx, start.step, iters)  # workers inherit the stop handlers
            validator = Validator(recipe, ctx, valid, iters, make_forward_step(ctx), global_mean_loss, collector)
            collector.start()
            for step in manager.steps():
                result = train_step(step, parts, loader, recipe, ctx)
                history.append(result)
                collector.after_step(step + 1)
                validation = validator.maybe_evaluate(parts, step + 1)
                if writer is not None:
                    tokens_per_s = tokens_per_step / result.seconds
                    record = {
                        "step": step + 1,
                        "loss": result.loss,
                        "lr": result.lr,
                        "grad_norm": result.grad_norm,
                        "tokens": (step + 1) * tokens_per_step,
                        "tokens_per_s": tokens_per_s,
                        "step_time_s": result.seconds,
                        "skipped_steps": sum(r.skipped for r in history),
                        "model_tflops": tokens_per_s
                        * flops_per_token(recipe.model, recipe.train.seq_len)
                        / ctx.world_size
                        / 1e12,  # per GPU
                    }
                    if parts.params_dtype == torch.float16:  # Megatron-LM logs the scale and the skipped iterations
                        record.update(loss_scale=result.loss_scale, overflow_steps=sum(r.overflow for r in history))
                    if validation is not None:
                        record.update(validation)
                    utilization = mfu(tokens_per_s, recipe.model, recipe.train.seq_len, ctx.world_size, peak)
                    writer.write(record if utilization is None else {**record, "mfu": utilization})
                _check_divergence(history, recipe.train.max_nonfinite_steps, run_dir)
                # never save right after a non-finite loss
                manager.step_done(step + 1, parts, tokens_per_step, can_save=not result.skipped)
    finally:
        collector.stop()
        if loader is not None:
            loader.close()
        if writer is not None:
            writer.close()
    return {**manager.summary(), **_summary(history, iters, tokens_per_step, ctx)}


def _summary(history: List[StepResult], iters: int, tokens_per_step: int, ctx: ParallelContext) -> Dict[str, Any]:
    seconds = sum(r.seconds for r in history)
    return {
        "tokens": iters * tokens_per_step,
        "first_loss": history[0].loss if history else None,
        "final_loss": history[-1].loss if history else None,
        "seconds": seconds,
        "tokens_per_s": len(history) * tokens_per_step / seconds if seconds else None,
        "world_size": ctx.world_size,
        "tp": ctx.tp,
        "pp": ctx.pp,
        "cp": ctx.cp,
        "dp": ctx.dp,
    }

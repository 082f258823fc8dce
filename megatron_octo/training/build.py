"""Build the Megatron-Core pieces of a training stage: model chunks in DDP, optimizer, LR scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import torch

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.errors import OctoError
from megatron_octo.models.shapes import shape
from megatron_octo.parallel import ParallelContext
from megatron_octo.utils.dtypes import TORCH_DTYPES


class SetupError(OctoError, ValueError):
    """The recipe asks for something this machine cannot do; the message says what and how to fix it."""


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on GPU and fp32 on CPU (CPU bf16 matmuls are slow and the tests compare in fp32)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return TORCH_DTYPES[dtype]


@dataclass
class Components:
    """What the training loop drives."""

    model: List[Any]
    """Model chunks wrapped in Megatron-Core DDP (one chunk without virtual pipelining); Megatron-Core is untyped."""
    optimizer: Any
    """Megatron-Core ``MegatronOptimizer``."""
    scheduler: Any
    """Megatron-Core ``OptimizerParamScheduler``."""
    config: Any
    """Megatron-Core ``TransformerConfig`` shared by the chunks and the schedules."""
    params_dtype: torch.dtype
    p2p: object
    """Megatron-Core ``P2PCommunicator`` over the pipeline group (what the pipeline schedules send through)."""


def _plans(recipe: RecipeConfig, ctx: ParallelContext, use_te: bool):
    """What ``precision.fp8`` and ``perf.*`` resolve to on this rank's device (``training.precision`` and
    ``training.features``); their refusals become SetupErrors and the main rank logs the notes (one line each)."""
    from megatron_octo.training.features import FeatureError, resolve_features
    from megatron_octo.training.precision import PrecisionError, detect_hardware, resolve_fp8

    hw = detect_hardware(ctx.device)
    try:
        fp8 = resolve_fp8(recipe.precision, recipe.parallel, hw)
        features = resolve_features(recipe, hw, use_te)
    except (PrecisionError, FeatureError) as exc:
        raise SetupError(str(exc)) from None
    if fp8.enabled and not use_te:
        raise SetupError(
            "precision.fp8 runs on Transformer Engine layers but model.spec=local: set model.spec=auto "
            "(or te), or precision.fp8=null"
        )
    if ctx.is_main:
        for note in (*fp8.notes, *features.notes):
            print(f"[octo] {note}", flush=True)
    return fp8, features


def build_model(recipe: RecipeConfig, ctx: ParallelContext, adapt=None) -> tuple:
    """GPTModel for this pipeline stage, initialized, in fp32/bf16/fp16, wrapped in Megatron-Core DDP.
    ``adapt(gpt_model, transformer_config)`` may change the model before it is wrapped (the RL critic swaps the
    output layer for a value head)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.transformer.module import Float16Module

    from megatron_octo.models.gpt import build_gpt_model, resolve_spec, transformer_config
    from megatron_octo.training.features import initialize_userbuffers
    from megatron_octo.training.init import initialize_invariant

    use_te = resolve_spec(recipe.model.spec)
    fp8, features = _plans(recipe, ctx, use_te)
    params_dtype = resolve_dtype(recipe.precision.dtype, ctx.device)
    initialize_userbuffers(features, recipe.parallel.tp, fp8.enabled, params_dtype)
    # FP8 parameters are quantized by TE kernels as they are created and written: build them on the GPU.
    on_cpu = not (fp8.param_gather and ctx.device.type == "cuda")
    tcfg = transformer_config(
        recipe.model,
        recipe.parallel,
        params_dtype,
        use_cpu_initialization=on_cpu,
        extra={**fp8.transformer_config(), **features.tcfg},
    )
    model = build_gpt_model(
        recipe.model, tcfg, ctx.pgs, pre_process=ctx.is_first_stage, post_process=ctx.is_last_stage, use_te=use_te
    )
    if recipe.train.init == "invariant":
        initialize_invariant(
            [model],
            seed=recipe.train.seed,
            std=recipe.model.init_method_std,
            num_layers=shape(recipe.model).num_layers,
            vocab_size=shape(recipe.model).vocab_size,
        )
    if adapt is not None:
        adapt(model, tcfg)
    model = model.to(ctx.device)
    if params_dtype != torch.float32:
        model = Float16Module(tcfg, model)
    ddp_config = DistributedDataParallelConfig(
        overlap_grad_reduce=recipe.parallel.overlap_grad_reduce,
        overlap_param_gather=recipe.parallel.overlap_param_gather,
        use_distributed_optimizer=recipe.parallel.distributed_optimizer,
        **features.ddp,
        **fp8.ddp_config(),
    )
    ddp = DistributedDataParallel(tcfg, ddp_config, model, pg_collection=ctx.pgs)
    tcfg.finalize_model_grads_func = finalize_model_grads
    tcfg.no_sync_func = ddp.no_sync
    if recipe.parallel.overlap_grad_reduce:
        tcfg.grad_sync_func = ddp.start_grad_sync
    if recipe.parallel.overlap_param_gather:
        tcfg.param_sync_func = ddp.start_param_sync
    return [ddp], tcfg, params_dtype


def build_optimizer(
    recipe: RecipeConfig, chunks: List[torch.nn.Module], ctx: ParallelContext, params_dtype: torch.dtype, iters: int
) -> tuple:
    """Megatron-Core optimizer (distributed if asked) and its LR scheduler, stepped once per iteration."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.utils import get_model_config

    o, s = recipe.optimizer, recipe.schedule
    opt_config = OptimizerConfig(
        optimizer=o.name,
        lr=s.lr,
        min_lr=s.min_lr,
        weight_decay=o.weight_decay,
        adam_beta1=o.beta1,
        adam_beta2=o.beta2,
        adam_eps=o.eps,
        clip_grad=o.clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=recipe.parallel.distributed_optimizer,
        **loss_scale_args(recipe),
        **_fp8_optimizer_fields(chunks[0]),
    )
    optimizer = get_megatron_optimizer(opt_config, chunks, use_gloo_process_groups=False, pg_collection=ctx.pgs)
    # The schedules multiply each micro-batch's loss by the optimizer's loss scale before backward (as
    # Megatron-LM wires it); the optimizer unscales the gradients and skips steps whose gradients overflow. fp32
    # and bf16 have a scale of exactly 1.
    get_model_config(chunks[0]).grad_scale_func = optimizer.scale_loss
    scheduler = OptimizerParamScheduler(optimizer, **scheduler_args(recipe, iters))
    return optimizer, scheduler


def _fp8_optimizer_fields(chunk) -> dict:
    """The distributed optimizer's FP8 fields, as the model chunk (DDP) was built."""
    fp8 = getattr(chunk.config, "fp8", None)
    reuse = getattr(getattr(chunk, "ddp_config", None), "reuse_grad_buf_for_mxfp8_param_ag", False)
    return dict(fp8_recipe=chunk.config.fp8_recipe if fp8 else None, reuse_grad_buf_for_mxfp8_param_ag=reuse)


def loss_scale_args(recipe: RecipeConfig) -> dict:
    """Megatron-Core ``OptimizerConfig`` loss-scaling fields (used only when the parameters are fp16)."""
    p = recipe.precision
    return dict(
        loss_scale=p.loss_scale,
        initial_loss_scale=p.initial_loss_scale,
        min_loss_scale=p.min_loss_scale,
        loss_scale_window=p.loss_scale_window,
        hysteresis=p.hysteresis,
    )


def scheduler_args(recipe: RecipeConfig, iters: int) -> dict:
    """Megatron-Core ``OptimizerParamScheduler`` arguments for the recipe, stepped once per iteration.

    Stable: ``constant`` at ``schedule.lr``. Decay: ``cosine`` from ``schedule.lr`` to ``schedule.min_lr`` over
    ``schedule.decay_iters`` (default: the whole stage). Warm-up, when asked for, rises linearly from 0.
    """
    s, o = recipe.schedule, recipe.optimizer
    decay_iters = s.decay_iters if s.decay_iters is not None else iters
    return dict(
        init_lr=0.0 if s.warmup_iters else s.lr,
        max_lr=s.lr,
        min_lr=s.min_lr,
        lr_warmup_steps=s.warmup_iters,
        lr_decay_steps=max(decay_iters, s.warmup_iters + 1),
        lr_decay_style=s.style,
        start_wd=o.weight_decay,
        end_wd=o.weight_decay,
        wd_incr_steps=iters,
        wd_incr_style="constant",
    )


def build(recipe: RecipeConfig, ctx: ParallelContext, iters: int) -> Components:
    """Everything the loop needs, for this rank."""
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    chunks, tcfg, params_dtype = build_model(recipe, ctx)
    optimizer, scheduler = build_optimizer(recipe, chunks, ctx, params_dtype, iters)
    return Components(
        model=chunks,
        optimizer=optimizer,
        scheduler=scheduler,
        config=tcfg,
        params_dtype=params_dtype,
        p2p=P2PCommunicator(pp_group=ctx.pgs.pp, config=tcfg),
    )

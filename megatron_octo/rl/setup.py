"""What an RL run starts from: the starting weights (one of our checkpoints, or a Hugging Face model or Megatron-LM
checkpoint converted once into the run directory), the tokenizer, the rollout engine, the reference model and the
reward."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.errors import OctoError
from megatron_octo.parallel import ParallelContext
from megatron_octo.rl.engines import RolloutEngine, TransformersEngine, VLLMRolloutEngine
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.start import HF, MEGATRON_LM, Origin, locate, prepare_source

COLLECTIVE_TIMEOUT_S = 4 * 3600
"""How long a rank may wait in a collective: while a rollout rank generates (or rank 0 validates), the other ranks
of its group wait in a broadcast, for much longer than training's 10 minutes at 4,096-8,192-token responses."""


class RLSetupError(OctoError, ValueError):
    """The RL run cannot start as configured; the message names the problem and the fix."""


def _tokenizer_dir(recipe: RecipeConfig, point: Origin) -> Path:
    from megatron_octo.convert import megatron_lm
    from megatron_octo.convert.sources import find_tokenizer, tokenizer_in

    for candidate in (recipe.rl.prompts.tokenizer, recipe.data.tokenizer):
        if candidate:
            return Path(candidate)
    if point.kind == HF:
        found = tokenizer_in(point.path)
    else:  # ours (hf_assets, the run's recipe) or Megatron-LM's (the HF tokenizer its args name)
        found = find_tokenizer(point.path, None)
        if found is None and point.kind == MEGATRON_LM:
            found = megatron_lm.named_tokenizer(point.path)
    if found is None:
        raise RLSetupError(f"no tokenizer found beside rl.init={recipe.rl.init}: set rl.prompts.tokenizer=DIR")
    return found


def starting_point(recipe: RecipeConfig) -> Origin:
    """Resolve ``rl.init`` (reads only): one of our checkpoints, a Hugging Face model directory or Hub ID, or a
    Megatron-LM checkpoint (``training.start.locate``); a one-line RLSetupError when it names none."""
    from megatron_octo.convert.errors import ConvertError

    try:
        return locate(str(recipe.rl.init))
    except (ckpt.CheckpointError, ConvertError) as exc:
        raise RLSetupError(f"rl.init: {exc}") from None


def load_tokenizer(recipe: RecipeConfig, point: Origin):
    """The tokenizer of the run: ``rl.prompts.tokenizer``, ``data.tokenizer``, or the one beside ``rl.init``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_tokenizer_dir(recipe, point)))


def materialize(recipe: RecipeConfig, point: Origin, run_dir: Path, ctx: ParallelContext, log) -> RecipeConfig:
    """The recipe with ``checkpoint.load`` pointing at the starting weights (collective): ``rl.init`` itself when
    it is one of our checkpoints, else its conversion into ``RUN_DIR/init`` for this TP/PP, made once by rank 0
    (``training.start.prepare_source``, the path ``checkpoint.load`` takes too: a resumed run finds it there; one
    made from another source, ``rl.init`` changed before the first checkpoint, is replaced)."""
    source = prepare_source(
        str(recipe.rl.init),
        run_dir,
        tp=ctx.tp,
        pp=ctx.pp,
        divisible=recipe.model.make_vocab_size_divisible_by,
        log=log,
    )
    return dataclasses.replace(
        recipe, checkpoint=dataclasses.replace(recipe.checkpoint, load=str(source), branch_from=None)
    )


def _hf_config(recipe: RecipeConfig, tokenizer) -> dict:
    from megatron_octo.models import get_family

    config = get_family(recipe.model.family).to_hf(recipe.model, dtype="float32")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key)
        if value is not None:
            config[key] = value
    return config


def engine_slot(recipe: RecipeConfig, ctx: ParallelContext) -> Tuple[Optional[int], int, bool]:
    """(this rank's engine index or None, number of engines, whether this rank drives its engine's output).
    One engine per data-parallel replica on its first rank; with ``rl.rollout.tensor_parallel`` one per TP group
    (every rank hosts a shard, its TP rank 0 reports), numbered replica by replica, stage by stage."""
    if recipe.rl.rollout.tensor_parallel:
        return ctx.dp_rank * ctx.pp + ctx.pp_rank, ctx.dp * ctx.pp, ctx.tp_rank == 0
    leader = dist.get_rank(ctx.pgs.mp) == 0
    return (ctx.dp_rank if leader else None), ctx.dp, leader


def make_engine(recipe: RecipeConfig, ctx: ParallelContext, tokenizer, run_dir: Path) -> Optional[RolloutEngine]:
    """This rank's rollout engine (``rl.rollout.engine``), still without weights; None where the rank hosts none.
    Collective over the job with ``rl.rollout.tensor_parallel`` (vLLM joins the job's process groups)."""
    r = recipe.rl.rollout
    index, _, _ = engine_slot(recipe, ctx)
    config = _hf_config(recipe, tokenizer)
    if r.tensor_parallel:  # one start directory for all engines, written once
        model_dir = run_dir / "engine_model"
        if ctx.is_main:
            _engine_dir(model_dir, config, tokenizer)
        dist.barrier()
    elif index is None:
        return None
    elif r.engine == "transformers":
        return TransformersEngine(config, tokenizer, device=str(ctx.device))
    else:
        model_dir = _engine_dir(run_dir / f"engine_model_dp{ctx.dp_rank}", config, tokenizer)
    assert index is not None  # with tensor_parallel every rank has one; otherwise None returned above
    longest = max([r.max_response_tokens, *r.response_length_schedule.values()])
    dtype = str(engine_dtype(recipe, ctx)).removeprefix("torch.")
    return VLLMRolloutEngine(
        str(model_dir),
        dtype=dtype,
        seed=recipe.train.seed + index,
        gpu_memory_utilization=r.gpu_memory_utilization,
        max_model_len=recipe.rl.prompts.max_prompt_tokens + longest,
        sleep_between_rollouts=r.sleep_between_rollouts,
        device=ctx.device,
        sleep_level=r.sleep_level,
        bucket_bytes=r.sync_bucket_mb << 20,
        tensor_parallel_size=ctx.tp if r.tensor_parallel else 1,
        external_launcher=r.tensor_parallel,
    )


def engine_dtype(recipe: RecipeConfig, ctx: ParallelContext) -> torch.dtype:
    """The dtype the rollout engine computes in (and the weight sync delivers): vLLM on a GPU bf16, else fp32."""
    if recipe.rl.rollout.engine == "vllm" and ctx.device.type == "cuda":
        return torch.bfloat16
    return torch.float32


def make_weight_sync(recipe: RecipeConfig, ctx: ParallelContext, engine=None):
    """The streamed weight sync of this rank's model-parallel group (``rl.sync.WeightSync``); collective-free."""
    from megatron_octo.rl.sync import WeightSync

    group = ctx.pgs.mp if recipe.rl.rollout.tensor_parallel else None  # every rank holds an engine shard
    return WeightSync(
        recipe.model,
        ctx.pgs.mp,
        engine_dtype(recipe, ctx),
        engine_group=group,
        bucket_bytes=recipe.rl.rollout.sync_bucket_mb << 20,
    )


def _engine_dir(path: Path, config: dict, tokenizer) -> Path:
    """An HF directory vLLM can start from: config, tokenizer and zero weights (the first sync replaces them)."""
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({**json.loads((path / "config.json").read_text()), **config}))
    return path


def make_reference(start: RecipeConfig, ctx: ParallelContext, iters: int):
    """A frozen copy of the starting policy (for the KL term), loaded from ``start.checkpoint.load``."""
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    from megatron_octo.training.build import build_model

    assert start.checkpoint.load is not None  # materialize() sets it
    chunks, tcfg, _ = build_model(start, ctx)
    ckpt.load(Path(start.checkpoint.load), SimpleNamespace(model=chunks), with_optimizer=False)
    for chunk in chunks:
        chunk.requires_grad_(False)
    return SimpleNamespace(model=chunks, p2p=P2PCommunicator(pp_group=ctx.pgs.pp, config=tcfg))


def rollout_reward(variant: str, workers: Optional[int] = None):
    """``rl.reward``: a variant of the math reward (``megatron_octo.rl.reward.MathReward``), or ``module:function``
    naming any callable (responses, golds) -> rewards."""
    if ":" in variant:
        import importlib

        module, _, name = variant.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise RLSetupError(
                f"rl.reward={variant!r} cannot be imported ({exc}): give a reward variant or "
                "module:function on the Python path"
            ) from None
    from megatron_octo.rl.reward import MathReward, resolve_variant

    try:
        resolve_variant(variant)
    except ValueError as exc:
        raise RLSetupError(f"rl.reward: {exc}") from None
    return MathReward(variant=variant, workers=workers)

"""Checks that span fields. Each failure is a ``ConfigError`` with one line naming the field and the fix.

``validate`` runs on every recipe (``config.loader.load_recipe``); ``validate_rl`` adds the checks of ``octo rl``
(the ``rl`` section, which training stages ignore). The allowed values of enumerated fields are in
``config.choices``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from megatron_octo.config.choices import CHOICES, RECOMPUTE_MODULES, RL_CHOICES
from megatron_octo.config.errors import ConfigError
from megatron_octo.config.schema import ModelConfig, ParallelConfig, RecipeConfig

if TYPE_CHECKING:
    from megatron_octo.models.shapes import Shape

_SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "vocab_size",
    "max_position_embeddings",
)


def _shape(model: ModelConfig) -> Shape:
    """``models.shapes.shape``, imported when called: importing ``models`` imports torch, and the reward server's
    venv (no torch) imports this package for config.schema."""
    from megatron_octo.models.shapes import shape as typed_shape

    return typed_shape(model)


def _get(recipe: RecipeConfig, dotted: str):
    return functools.reduce(getattr, dotted.split("."), recipe)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_choices(recipe: RecipeConfig, choices_by_field: Mapping[str, Sequence[Optional[str]]]) -> None:
    for dotted, choices in choices_by_field.items():
        value = _get(recipe, dotted)
        shown = ", ".join(str(c) for c in choices)
        _require(value in choices, f"{dotted}={value!r} is not one of: {shown}")


def _check_model(recipe: RecipeConfig) -> None:
    m = recipe.model
    for name in _SHAPE_FIELDS:
        value = getattr(m, name)
        _require(value is not None, f"model.{name} is not set: name a model.preset or set model.{name}")
        _require(value > 0, f"model.{name}={value} must be positive")
    s = _shape(m)
    _require(
        s.num_attention_heads % s.query_groups == 0,
        f"model.num_query_groups={s.query_groups} must divide model.num_attention_heads={s.num_attention_heads}",
    )
    _require(
        m.kv_channels is None or m.kv_channels > 0,
        f"model.kv_channels={m.kv_channels} must be positive (or null: hidden_size / num_attention_heads)",
    )
    if m.kv_channels is None:
        _require(
            s.hidden_size % s.num_attention_heads == 0,
            f"model.num_attention_heads={s.num_attention_heads} must divide model.hidden_size={s.hidden_size} "
            f"(or set model.kv_channels)",
        )


def _check_parallel(recipe: RecipeConfig) -> None:
    p, m = recipe.parallel, _shape(recipe.model)
    for name in ("tp", "pp", "cp"):
        _require(getattr(p, name) >= 1, f"parallel.{name}={getattr(p, name)} must be >= 1")
    _require(
        m.num_attention_heads % p.tp == 0,
        f"parallel.tp={p.tp} must divide model.num_attention_heads={m.num_attention_heads}",
    )
    _require(
        m.query_groups % p.tp == 0,
        f"parallel.tp={p.tp} must divide model.num_query_groups={m.query_groups} (the key-value heads)",
    )
    _require(m.num_layers % p.pp == 0, f"parallel.pp={p.pp} must divide model.num_layers={m.num_layers}")
    _require(not p.sequence_parallel or p.tp > 1, "parallel.sequence_parallel=true needs parallel.tp > 1")
    _require(
        recipe.train.seq_len % (2 * p.cp) == 0 or p.cp == 1,
        f"train.seq_len={recipe.train.seq_len} must be divisible by 2*parallel.cp={2 * p.cp}",
    )
    _require(
        not p.overlap_param_gather or p.distributed_optimizer,
        "parallel.overlap_param_gather=true needs parallel.distributed_optimizer=true",
    )


def _check_train(recipe: RecipeConfig) -> None:
    t, m = recipe.train, _shape(recipe.model)
    for name in ("global_batch", "micro_batch", "seq_len"):
        _require(getattr(t, name) >= 1, f"train.{name}={getattr(t, name)} must be >= 1")
    _require(
        t.global_batch % t.micro_batch == 0,
        f"train.global_batch={t.global_batch} must be divisible by train.micro_batch={t.micro_batch}",
    )
    _require(t.iters is not None or t.tokens is not None, "set train.iters or train.tokens")
    _require(t.iters is None or t.iters >= 1, f"train.iters={t.iters} must be >= 1")
    _require(t.tokens is None or t.tokens >= 1, f"train.tokens={t.tokens} must be >= 1")
    _require(t.max_nonfinite_steps >= 1, f"train.max_nonfinite_steps={t.max_nonfinite_steps} must be >= 1")
    _require(t.exit_interval is None or t.exit_interval >= 1, f"train.exit_interval={t.exit_interval} must be >= 1")
    _require(
        t.eval_interval is None or t.eval_interval >= 1,
        f"train.eval_interval={t.eval_interval} must be >= 1 (or null: no validation)",
    )
    _require(t.eval_iters >= 0, f"train.eval_iters={t.eval_iters} must be >= 0")
    _require(
        t.manual_gc_interval >= 0,
        f"train.manual_gc_interval={t.manual_gc_interval} must be >= 0 (0: collect only at the start)",
    )
    _require(
        t.seq_len <= m.max_position_embeddings,
        f"train.seq_len={t.seq_len} exceeds model.max_position_embeddings={m.max_position_embeddings}",
    )


def _check_data(recipe: RecipeConfig) -> None:
    d = recipe.data
    _require(d.num_workers >= 0, f"data.num_workers={d.num_workers} must be >= 0 (0: no worker processes)")
    _require(d.prefetch_factor >= 1, f"data.prefetch_factor={d.prefetch_factor} must be >= 1")
    if d.kind != "blend":
        return
    from megatron_octo.data.mixtures import check_sources, load_mixture

    _require(
        bool(d.sources) or bool(d.mixture),
        "data.kind=blend needs data.sources (a list of {name, weight, path}) or data.mixture (a mixture name)",
    )
    _require(not (d.sources and d.mixture), "set data.mixture or data.sources, not both")
    if d.mixture:
        load_mixture(d.mixture)  # raises ConfigError naming the mixture and the problem
    else:
        check_sources(list(d.sources), "data.sources")
    parts = d.split.replace("/", ",").split(",")
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        shares = []
    _require(
        1 <= len(shares) <= 3 and all(x >= 0 for x in shares) and shares[0] > 0,
        f"data.split={d.split!r} must be up to three non-negative numbers train,valid,test with train > 0, "
        f"e.g. 100,0,0 or 98,1,1",
    )


def _check_precision(recipe: RecipeConfig) -> None:
    p, m = recipe.precision, _shape(recipe.model)
    layers = p.fp8_bf16_layers
    _require(layers is None or layers >= 0, f"precision.fp8_bf16_layers={layers} must be >= 0")
    _require(
        not (layers and p.fp8_recipe == "delayed"),
        "precision.fp8_bf16_layers needs a current-scaling recipe: Megatron-Core's delayed scaling cannot keep "
        "layers in bf16 (set precision.fp8_recipe=tensorwise)",
    )
    per_stage = m.num_layers // recipe.parallel.pp
    _require(
        layers is None or layers <= per_stage,
        f"precision.fp8_bf16_layers={layers} exceeds the {per_stage} layers of a pipeline stage",
    )
    # auto only asks for FP8 where it can run; an explicit format is a demand.
    _require(
        p.fp8 in (None, "auto") or p.dtype in ("auto", "bf16"), "precision.fp8 needs precision.dtype=bf16 (or auto)"
    )
    _require(
        p.loss_scale is None or p.loss_scale > 0,
        f"precision.loss_scale={p.loss_scale} must be positive (or null for dynamic scaling)",
    )
    _require(
        0 < p.min_loss_scale <= p.initial_loss_scale,
        f"precision.min_loss_scale={p.min_loss_scale} and initial_loss_scale={p.initial_loss_scale} must "
        f"satisfy 0 < min <= initial",
    )
    _require(
        p.loss_scale_window >= 1 and p.hysteresis >= 1,
        "precision.loss_scale_window and precision.hysteresis must be >= 1",
    )


def _check_perf(recipe: RecipeConfig) -> None:
    f, per_stage = recipe.perf, _shape(recipe.model).num_layers // recipe.parallel.pp
    n = f.recompute_num_layers
    _require(
        n is None or 1 <= n <= per_stage,
        f"perf.recompute_num_layers={n} must be between 1 and the {per_stage} layers of a pipeline stage",
    )
    _require(
        n is None or f.recompute == "full",
        "perf.recompute_num_layers applies to perf.recompute=full only (selective recomputes every layer)",
    )
    bad = [x for x in f.recompute_modules if x not in RECOMPUTE_MODULES]
    _require(not bad, f"perf.recompute_modules has {bad}: choose from {', '.join(RECOMPUTE_MODULES)}")
    _require(
        f.recompute != "selective" or bool(f.recompute_modules),
        "perf.recompute=selective needs at least one of perf.recompute_modules",
    )
    _require(
        not f.tp_comm_overlap or (recipe.parallel.tp > 1 and recipe.parallel.sequence_parallel),
        "perf.tp_comm_overlap=true needs parallel.tp > 1 and parallel.sequence_parallel=true",
    )


def _check_optimization(recipe: RecipeConfig) -> None:
    s, o = recipe.schedule, recipe.optimizer
    _require(s.lr > 0, f"schedule.lr={s.lr} must be positive")
    _require(0 <= s.min_lr <= s.lr, f"schedule.min_lr={s.min_lr} must lie in [0, schedule.lr={s.lr}]")
    _require(s.warmup_iters >= 0, f"schedule.warmup_iters={s.warmup_iters} must be >= 0")
    _require(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optimizer.beta1 and optimizer.beta2 must lie in [0, 1)")
    _require(o.eps > 0, f"optimizer.eps={o.eps} must be positive")
    _require(o.clip_grad >= 0, f"optimizer.clip_grad={o.clip_grad} must be >= 0 (0 disables clipping)")
    _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    c = recipe.checkpoint
    _require(c.keep_last >= 1, f"checkpoint.keep_last={c.keep_last} must be >= 1")
    _require(
        c.save_interval is None or c.save_interval >= 1, f"checkpoint.save_interval={c.save_interval} must be >= 1"
    )
    _require(not (c.load and c.branch_from), "set checkpoint.load or checkpoint.branch_from, not both")
    _require(recipe.logging.log_interval >= 1, f"logging.log_interval={recipe.logging.log_interval} must be >= 1")
    _check_wandb(recipe.logging)


def _check_wandb(logging) -> None:
    """W&B settings that cannot work are refused at load, before a run directory is touched."""
    if not logging.wandb_project:
        return
    import importlib.util

    _require(
        logging.wandb_mode in (None, "online", "offline", "disabled"),
        f"logging.wandb_mode={logging.wandb_mode!r} is not one of: online, offline, disabled",
    )
    _require(
        importlib.util.find_spec("wandb") is not None,
        "logging.wandb_project is set but wandb is not installed: pip install 'megatron-octo[wandb]' (or unset "
        "logging.wandb_project)",
    )


def validate(recipe: RecipeConfig, world_size: Optional[int] = None) -> None:
    """Raise ``ConfigError`` on the first problem; with ``world_size``, also check the data-parallel split."""
    from megatron_octo.models import FAMILIES  # the family registry is the set of families

    _check_choices(recipe, {"model.family": tuple(FAMILIES), **CHOICES})
    _check_model(recipe)
    _check_parallel(recipe)
    _check_train(recipe)
    _check_data(recipe)
    _check_precision(recipe)
    _check_perf(recipe)
    _check_optimization(recipe)
    if world_size is not None:
        check_world(recipe, world_size)


def data_parallel_size(parallel: ParallelConfig, world_size: int) -> int:
    """The data-parallel size of ``world_size`` processes, or a ConfigError when they cannot hold tp*pp*cp."""
    model_parallel = parallel.tp * parallel.pp * parallel.cp
    _require(
        world_size % model_parallel == 0,
        f"{world_size} processes cannot hold parallel.tp*pp*cp={model_parallel}: launch a multiple of {model_parallel}",
    )
    return world_size // model_parallel


def check_world(recipe: RecipeConfig, world_size: int) -> int:
    """Return the data-parallel size for ``world_size`` processes, or raise (training's batch geometry)."""
    t = recipe.train
    dp = data_parallel_size(recipe.parallel, world_size)
    _require(
        t.global_batch % (t.micro_batch * dp) == 0,
        f"train.global_batch={t.global_batch} must be divisible by train.micro_batch*DP="
        f"{t.micro_batch}*{dp}={t.micro_batch * dp}",
    )
    return dp


def train_iters(recipe: RecipeConfig) -> int:
    """Optimizer steps of the stage: ``train.iters``, else ``train.tokens`` over tokens a step, rounded up."""
    t = recipe.train
    if t.iters is not None:
        return t.iters
    if t.tokens is None:
        raise ConfigError("set train.iters or train.tokens")
    return math.ceil(t.tokens / (t.global_batch * t.seq_len))


def max_response_tokens(recipe: RecipeConfig, step: int) -> int:
    """The response length cap at (0-based) ``step``: the last ``rl.rollout.response_length_schedule`` entry at or
    before ``step``, else ``rl.rollout.max_response_tokens``."""
    r = recipe.rl.rollout
    starts = [s for s in sorted(r.response_length_schedule) if s <= step]
    return r.response_length_schedule[starts[-1]] if starts else r.max_response_tokens


def validate_rl(recipe: RecipeConfig, dp: int = 1) -> None:
    """The checks ``octo rl`` adds to ``validate``: choices, batch geometry over ``dp`` data-parallel ranks, and
    sequence lengths that fit the model."""
    rl, r = recipe.rl, recipe.rl.rollout
    _check_choices(recipe, RL_CHOICES)
    _require(
        rl.init is not None,
        "rl.init is not set: give the starting policy (a Hugging Face model directory or Hub ID, or a "
        "Megatron-Core checkpoint DIR[:STEP], ours or Megatron-LM's)",
    )
    _require(rl.prompts.path is not None, "rl.prompts.path is not set: give a JSONL of prompt/answer problems")
    _require(
        r.n >= 2 or rl.algorithm == "ppo",
        f"rl.rollout.n={r.n} must be >= 2 for GRPO (advantages are relative within a prompt's group)",
    )
    _require(
        rl.prompts_per_step >= 1 and rl.mini_batch_prompts >= 1,
        "rl.prompts_per_step and rl.mini_batch_prompts must be >= 1",
    )
    _require(
        rl.prompts_per_step % rl.mini_batch_prompts == 0,
        f"rl.prompts_per_step={rl.prompts_per_step} must be divisible by rl.mini_batch_prompts={rl.mini_batch_prompts}",
    )
    _require(
        rl.mini_batch_prompts % dp == 0,
        f"rl.mini_batch_prompts={rl.mini_batch_prompts} must be divisible by the data-parallel size {dp}",
    )
    per_rank = rl.mini_batch_prompts // dp * r.n
    budget = rl.max_tokens_per_micro_batch
    _require(budget is None or budget >= 1, f"rl.max_tokens_per_micro_batch={budget} must be >= 1 (or null)")
    _require(
        not rl.sequence_packing or budget is not None,
        "rl.sequence_packing=true needs rl.max_tokens_per_micro_batch (the tokens packed into one row)",
    )
    _require(
        budget is not None or per_rank % recipe.train.micro_batch == 0,
        f"a rank's share of a mini-batch ({per_rank} responses) must be divisible by train.micro_batch="
        f"{recipe.train.micro_batch}",
    )
    _require(rl.epochs >= 1, f"rl.epochs={rl.epochs} must be >= 1")
    _require(
        rl.algorithm != "ppo" or not recipe.parallel.sequence_parallel,
        "rl.algorithm=ppo does not support parallel.sequence_parallel=true (the value head reads whole "
        "sequences): set it to false",
    )
    _require(0 < rl.clip_ratio < 1, f"rl.clip_ratio={rl.clip_ratio} must lie in (0, 1)")
    _require(r.temperature > 0, f"rl.rollout.temperature={r.temperature} must be > 0 (sampling)")
    _require(0 < r.top_p <= 1, f"rl.rollout.top_p={r.top_p} must lie in (0, 1]")
    _require(
        r.max_response_tokens >= 1 and all(v >= 1 for v in r.response_length_schedule.values()),
        f"rl.rollout.max_response_tokens={r.max_response_tokens} and every rl.rollout.response_length_schedule "
        "value must be >= 1",
    )
    _require(
        not r.tensor_parallel or r.engine == "vllm",
        "rl.rollout.tensor_parallel=true needs rl.rollout.engine=vllm (the transformers engine is unsharded)",
    )
    _require(r.sleep_level in (1, 2), f"rl.rollout.sleep_level={r.sleep_level} must be 1 or 2")
    _require(r.sync_bucket_mb >= 1, f"rl.rollout.sync_bucket_mb={r.sync_bucket_mb} must be >= 1")
    longest = max([r.max_response_tokens, *r.response_length_schedule.values()])
    total = rl.prompts.max_prompt_tokens + longest
    positions = _shape(recipe.model).max_position_embeddings
    _require(
        total <= positions,
        f"rl.prompts.max_prompt_tokens + the longest response = {total} exceeds model.max_position_embeddings="
        f"{positions}",
    )

"""The allowed values of every enumerated recipe field and command option, each set in one place.

``config.validate`` checks a recipe against ``CHOICES`` (training fields) and ``RL_CHOICES`` (``octo rl`` only);
the code that dispatches on a field imports its set from here (``rl.algorithms`` its KL estimators and loss
aggregations). ``model.family`` is not listed: its set is the family registry, ``megatron_octo.models.FAMILIES``.
The sets of options that are no recipe field (``octo convert --from/--to``, ``octo eval --source/--backend``,
``octo launch --command/--launcher``) are at the end: the command's parser offers them as its ``choices`` and the
library function behind it refuses any other value with the same list.
The order of each tuple is the order an error message lists the values in.

This module imports nothing heavy (no torch), so building ``octo``'s parsers stays fast.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

MODEL_SPECS = ("auto", "te", "local")
"""``model.spec``: Transformer Engine where usable, Transformer Engine, plain PyTorch layers."""
TRAIN_INITS = ("invariant", "megatron")
"""``train.init``."""
DATA_KINDS = ("synthetic", "blend")
"""``data.kind``."""
SCHEDULE_STYLES = ("constant", "cosine", "linear")
"""``schedule.style`` (Megatron-Core ``lr_decay_style`` names)."""
OPTIMIZERS = ("adam", "sgd")
"""``optimizer.name`` (Megatron-Core optimizer names)."""
DTYPES = ("auto", "fp32", "bf16", "fp16")
"""``precision.dtype``; ``auto`` is bf16 on GPU, fp32 on CPU."""
FP8_FORMATS: Tuple[Optional[str], ...] = (None, "auto", "hybrid", "e4m3")
"""``precision.fp8`` (None: no FP8; auto: per GPU, ``training.precision``)."""
FP8_RECIPES = ("auto", "tensorwise", "delayed", "mxfp8", "blockwise")
"""``precision.fp8_recipe``."""
TP_COMM_BOOTSTRAPS = ("nccl", "mpi", "gloo")
"""``perf.tp_comm_bootstrap`` (TE userbuffers bootstrap backends)."""
RECOMPUTE_GRANULARITIES: Tuple[Optional[str], ...] = (None, "selective", "full")
"""``perf.recompute`` (Megatron-Core ``recompute_granularity``)."""
RECOMPUTE_METHODS = ("block", "uniform")
"""``perf.recompute_method``."""
RECOMPUTE_MODULES = ("core_attn", "mlp", "layernorm")
"""``perf.recompute_modules`` entries (dense Llama/Qwen2 layers)."""

RL_ALGORITHMS = ("grpo", "ppo")
"""``rl.algorithm``."""
KL_ESTIMATORS = ("low_var_kl", "k1", "abs", "mse")
"""``rl.kl_estimator`` (``rl.algorithms.kl_estimate``)."""
LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
"""``rl.loss_aggregation`` (``rl.algorithms.aggregate``)."""
ROLLOUT_ENGINES = ("vllm", "transformers")
"""``rl.rollout.engine``."""

CHOICES: Dict[str, Tuple[Optional[str], ...]] = {
    "model.spec": MODEL_SPECS,
    "train.init": TRAIN_INITS,
    "data.kind": DATA_KINDS,
    "schedule.style": SCHEDULE_STYLES,
    "optimizer.name": OPTIMIZERS,
    "precision.dtype": DTYPES,
    "precision.fp8": FP8_FORMATS,
    "precision.fp8_recipe": FP8_RECIPES,
    "perf.tp_comm_bootstrap": TP_COMM_BOOTSTRAPS,
    "perf.recompute": RECOMPUTE_GRANULARITIES,
    "perf.recompute_method": RECOMPUTE_METHODS,
}
"""Dotted recipe field -> its allowed values, checked for every stage."""

RL_CHOICES: Dict[str, Tuple[Optional[str], ...]] = {
    "rl.algorithm": RL_ALGORITHMS,
    "rl.kl_estimator": KL_ESTIMATORS,
    "rl.loss_aggregation": LOSS_AGGREGATIONS,
    "rl.rollout.engine": ROLLOUT_ENGINES,
}
"""Dotted recipe field -> its allowed values, checked by ``octo rl`` only (training stages ignore ``rl``)."""

CONVERT_FORMATS = ("hf", "mcore", "nemo")
"""``octo convert --from/--to`` (``convert.convert``'s ``src`` / ``dst``): a Hugging Face directory, a Megatron-Core
checkpoint (ours or Megatron-LM's), a NeMo checkpoint."""
EVAL_SOURCES = ("local", "hf")
"""``octo eval --source`` (``eval.runner.run_eval``'s ``source``): JSONL files in ``--data-dir``, Hugging Face
datasets."""
EVAL_BACKENDS = ("transformers", "vllm")
"""``octo eval --backend`` (``eval.backends.make_backend``)."""
STAGE_COMMANDS = ("train", "rl")
"""``octo launch --command`` (``launch.JobSpec.command``): the ``octo`` subcommand the ranks run."""
SLURM_LAUNCHERS = ("srun", "torchrun")
"""``octo launch slurm --launcher`` (``launch.SlurmConfig.launcher``): one task per rank, or one torchrun per
node."""

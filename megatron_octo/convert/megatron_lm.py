"""Megatron-LM's checkpoints: its save-folder layout, its ``args`` <-> our ModelConfig, and opening its checkpoints.

What ``megatron/training/checkpointing.py`` (core_v0.16.1) writes and reads::

    SAVE/latest_checkpointed_iteration.txt   the tracker: an iteration number, or ``release`` (converted weights)
    SAVE/iter_0000100/ or SAVE/release/      one checkpoint, in one of three formats:
        torch_dist   metadata.json, .metadata, __*.distcp, common.pt (args, checkpoint_version, iteration, FLOPs,
                     scheduler, content metadata: everything that is no sharded tensor)
        zarr         metadata.json (sharded_backend "zarr"), one directory per tensor key, common.pt
                     (Megatron-Core < 0.8 wrote it; read through TensorStore, see ``zarr_io``)
        torch        (legacy) mp_rank_TT[_PPP]/model_optim_rng.pt per tensor/pipeline rank: the rank's
                     state_dict_for_save_checkpoint (unstacked layer keys, local layer numbers, TP shards),
                     the args, iteration, optimizer, RNG (see ``legacy_io``)

Model tensors in torch_dist / zarr use the keys of GPTModel's sharded state dict, exactly ours (``layout``), so
a Megatron-LM checkpoint is read by the same row source as ours once its ``args`` are mapped to a ModelConfig.
This module imports nothing of ``training``: both the converter and ``training.checkpoint`` use it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert.errors import ConvertError

TRACKER = "latest_checkpointed_iteration.txt"
RELEASE = "release"
CHECKPOINT_VERSION = 3.0
"""``checkpoint_version`` Megatron-LM writes (3.0: QKV interleaved per group, the layout Megatron-Core uses)."""
COMMON_FILE = "common.pt"
MCORE_CONFIG = "metadata.json"
LEGACY_FILE = "model_optim_rng.pt"
_ITER_RE = re.compile(r"^iter_(\d{7})$")
_LEGACY_DIR_RE = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
OUR_META = "octo_checkpoint.json"
"""Our metadata file (``training.checkpoint.META_FILE``): a directory holding it is ours, not Megatron-LM's."""


# --------------------------------------------------------------------------------------------------------------------
# Save folders, tracker, formats
# --------------------------------------------------------------------------------------------------------------------


def read_tracker(save_dir: Path) -> Optional[str]:
    """The tracker's content (``release`` or an iteration number as text), None without a tracker; a one-line error
    for anything else (Megatron-LM exits on it too)."""
    path = Path(save_dir) / TRACKER
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if text != RELEASE and not text.isdigit():
        raise ConvertError(f"{path} holds {text!r}: Megatron-LM's tracker names an iteration or 'release'")
    return text


def write_tracker(save_dir: Path, value) -> None:
    """The tracker file naming ``value`` (an iteration or ``release``), replaced atomically."""
    from megatron_octo.utils.io import atomic_write_text

    atomic_write_text(Path(save_dir) / TRACKER, f"{value}")


def iteration_dir(save_dir: Path, value) -> Path:
    """``SAVE/release`` or ``SAVE/iter_%07d``."""
    return Path(save_dir) / (RELEASE if str(value) == RELEASE else f"iter_{int(value):07d}")


def checkpoint_format(path: Path) -> Optional[str]:
    """``torch_dist`` / ``zarr`` / ``torch`` for a Megatron checkpoint directory, None for anything else."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / MCORE_CONFIG).is_file():
        import json

        try:
            backend = json.loads((path / MCORE_CONFIG).read_text()).get("sharded_backend")
        except (ValueError, AttributeError):
            return None
        return backend if backend in ("torch_dist", "zarr") else None
    if any(_LEGACY_DIR_RE.match(p.name) and (p / LEGACY_FILE).is_file() for p in path.iterdir()):
        return "torch"
    return None


def locate(spec: str) -> Optional[Path]:
    """The Megatron-LM checkpoint directory ``spec`` names (a save folder: the tracker's checkpoint; an ``iter_N``
    or ``release`` folder; ``DIR:STEP``), or None when it names none (e.g. one of ours, which carries
    octo_checkpoint.json). A save folder whose tracker points at a missing checkpoint is a one-line error."""
    match = re.search(r":(\d+)$", spec)
    path, step = (
        (Path(spec[: match.start()]), int(match.group(1))) if match and not Path(spec).exists() else (Path(spec), None)
    )
    if step is not None:
        found = iteration_dir(path, step)
        return found if checkpoint_format(found) and not (found / OUR_META).is_file() else None
    if checkpoint_format(path):
        return None if (path / OUR_META).is_file() else path
    value = read_tracker(path) if path.is_dir() else None
    if value is None:
        return None
    found = iteration_dir(path, value)
    if (found / OUR_META).is_file():
        return None
    if checkpoint_format(found) is None:
        raise ConvertError(
            f"{path / TRACKER} names {value!r} but {found} holds no Megatron checkpoint: the save "
            f"folder is incomplete; give the iteration folder itself or DIR:STEP"
        )
    return found


# --------------------------------------------------------------------------------------------------------------------
# args <-> ModelConfig
# --------------------------------------------------------------------------------------------------------------------

# (arg, allowed values, why): what our Llama/Qwen2 families cannot represent.
_UNSUPPORTED = (
    ("normalization", ("RMSNorm",), "only RMSNorm models convert"),
    ("swiglu", (True,), "only SwiGLU MLPs convert"),
    ("add_bias_linear", (False,), "linear biases other than QKV have no place in Llama/Qwen2"),
    ("position_embedding_type", ("rope",), "only RoPE models convert"),
    ("rotary_percent", (1.0, None), "partial RoPE is not supported"),
    ("rotary_interleaved", (False, None), "interleaved RoPE is not supported"),
    ("apply_layernorm_1p", (False, None), "zero-centered norms are not supported"),
    ("layernorm_zero_centered_gamma", (False, None), "zero-centered norms are not supported"),
    ("qk_layernorm", (False, None), "QK norm is not supported"),
    ("num_experts", (None, 0, 1), "MoE models are not supported"),
    ("mtp_num_layers", (None, 0), "multi-token prediction layers are not supported"),
    ("multi_latent_attention", (False, None), "multi-latent attention is not supported"),
    ("squared_relu", (False, None), "only SwiGLU MLPs convert"),
    ("is_hybrid_model", (False, None), "hybrid (Mamba) models are not supported"),
    ("heterogeneous_layers_config_path", (None,), "heterogeneous layers are not supported"),
    ("heterogeneous_layers_config_encoded_json", (None,), "heterogeneous layers are not supported"),
    ("num_layers_per_virtual_pipeline_stage", (None,), "virtual pipeline checkpoints are not supported"),
)


def _arg(args, name: str, default=None):
    return getattr(args, name, default)


def check_supported(args, where) -> None:
    """One-line ConvertError naming the first Megatron-LM arg our families cannot represent."""
    for name, allowed, why in _UNSUPPORTED:
        value = _arg(args, name, allowed[-1] if None in allowed else None)
        if name == "swiglu" and value is None:
            value = bool(_arg(args, "gated_linear_unit", False))
        if name == "add_bias_linear" and _arg(args, "disable_bias_linear") is not None:
            value = not _arg(args, "disable_bias_linear")
        if value not in allowed:
            raise ConvertError(f"{where}: Megatron-LM arg {name}={value!r}: {why}")


def unpadded_vocab(args, tokenizer_dir: Optional[Path]) -> Tuple[int, Optional[str]]:
    """The real vocabulary: ``vocab_size`` in the args, else the tokenizer's, else every stored row (with a note)."""
    if _arg(args, "vocab_size"):
        return int(args.vocab_size), None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), None
    padded = int(args.padded_vocab_size)
    return padded, (
        f"the checkpoint's args record no unpadded vocabulary size and no tokenizer was found: the output "
        f"keeps all {padded} embedding rows (padding included); pass --tokenizer DIR to drop the padding"
    )


def model_config(args, where, vocab_size: int) -> ModelConfig:
    """Our ModelConfig of Megatron-LM ``args`` (a one-line ConvertError naming the arg it cannot represent)."""
    check_supported(args, where)
    try:
        heads, hidden = int(args.num_attention_heads), int(args.hidden_size)
        gqa = bool(_arg(args, "group_query_attention", False))
        eps = _arg(args, "norm_epsilon", _arg(args, "layernorm_epsilon", 1e-5))
        scaled = bool(_arg(args, "use_rope_scaling", False))
        qkv_bias = bool(_arg(args, "add_qkv_bias", False))
        return ModelConfig(
            family="qwen2" if qkv_bias else "llama",
            num_layers=int(args.num_layers),
            hidden_size=hidden,
            ffn_hidden_size=int(_arg(args, "ffn_hidden_size") or 4 * hidden),
            num_attention_heads=heads,
            num_query_groups=int(args.num_query_groups) if gqa and _arg(args, "num_query_groups") else heads,
            kv_channels=int(_arg(args, "kv_channels") or hidden // heads),
            vocab_size=int(vocab_size),
            max_position_embeddings=int(_arg(args, "max_position_embeddings") or _arg(args, "seq_length")),
            rotary_base=float(_arg(args, "rotary_base", 10000)),
            rope_scaling_factor=float(_arg(args, "rope_scaling_factor", 8.0)) if scaled else None,
            norm_epsilon=float(eps),
            tie_word_embeddings=not bool(_arg(args, "untie_embeddings_and_output_weights", False)),
            add_qkv_bias=qkv_bias,
            init_method_std=float(_arg(args, "init_method_std", 0.02)),
            make_vocab_size_divisible_by=int(_arg(args, "make_vocab_size_divisible_by", 128)),
        )
    except (AttributeError, TypeError) as exc:
        raise ConvertError(
            f"{where}: the checkpoint's args lack a model field ({exc}): not a GPT checkpoint of Megatron-LM"
        ) from None


def model_args(cfg: ModelConfig, tp: int, pp: int) -> dict:
    """The Megatron-LM args describing ``cfg`` at ``tp`` x ``pp`` (what ``load_args_from_checkpoint`` restores
    and ``check_checkpoint_args`` compares), from which ``model_config`` gives ``cfg`` back."""
    from megatron_octo.models import shapes

    return dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        group_query_attention=True,
        num_query_groups=shapes.query_groups(cfg),
        kv_channels=shapes.head_dim(cfg),
        max_position_embeddings=cfg.max_position_embeddings,
        position_embedding_type="rope",
        use_rotary_position_embeddings=True,
        rotary_base=int(cfg.rotary_base) if float(cfg.rotary_base).is_integer() else cfg.rotary_base,
        rotary_percent=1.0,
        rotary_interleaved=False,
        use_rope_scaling=cfg.rope_scaling_factor is not None,
        rope_scaling_factor=float(cfg.rope_scaling_factor if cfg.rope_scaling_factor is not None else 8.0),
        normalization="RMSNorm",
        norm_epsilon=float(cfg.norm_epsilon),
        layernorm_epsilon=float(cfg.norm_epsilon),  # the attribute Megatron-LM 0.16's --norm-epsilon sets
        apply_layernorm_1p=False,
        qk_layernorm=False,
        swiglu=True,
        gated_linear_unit=True,
        squared_relu=False,
        add_bias_linear=False,
        add_qkv_bias=bool(cfg.add_qkv_bias),
        untie_embeddings_and_output_weights=not cfg.tie_word_embeddings,
        apply_query_key_layer_scaling=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        num_experts=None,
        vocab_size=cfg.vocab_size,
        make_vocab_size_divisible_by=cfg.make_vocab_size_divisible_by,
        padded_vocab_size=shapes.padded_vocab_size(shapes.shape(cfg).vocab_size, cfg.make_vocab_size_divisible_by, tp),
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=None,
        num_layers_per_virtual_pipeline_stage=None,
        expert_model_parallel_size=1,
        context_parallel_size=1,
        ckpt_format="torch_dist",
    )


# What Megatron-LM core_v0.16.1 does with a checkpoint's model that its args do not decide.
MEGATRON_LM_ROPE_SCALING = (8.0, 1.0, 4.0, 8192)
"""(factor, low_freq_factor, high_freq_factor, original_max_position_embeddings) of the llama3 RoPE scaling
Megatron-LM core_v0.16.1's GPT model applies under ``--use-rope-scaling``, whatever else it is given: its
gpt_builders.py passes GPTModel ``rope_scaling`` but no ``rope_scaling_factor`` (GPTModel's default 8.0;
``--rope-scaling-factor`` reaches only the multimodal models), and ``RotaryEmbedding._apply_scaling`` is never
given the other three (its defaults 1, 4, 8192)."""
MEGATRON_LM_NORM_EPSILON = 1e-5
"""Megatron-LM's ``--norm-epsilon`` default (TransformerConfig.layernorm_epsilon)."""


def loading_caveat(cfg: ModelConfig) -> Optional[str]:
    """One line on what Megatron-LM (core_v0.16.1) builds differently from ``cfg`` when it loads a checkpoint of it,
    and what to pass it, or None. Its ``load_args_from_checkpoint`` restores neither ``use_rope_scaling`` nor the
    norm epsilon (no ``_set_arg`` for them), so ``--use-checkpoint-args`` alone builds the model without RoPE scaling
    and with epsilon 1e-5; a llama3 scaling other than ``MEGATRON_LM_ROPE_SCALING`` no flag reproduces."""
    factor = cfg.rope_scaling_factor
    scaled = factor is not None
    eps = float(cfg.norm_epsilon)
    other_eps = eps != MEGATRON_LM_NORM_EPSILON
    if not scaled and not other_eps:
        return None
    built = (["without RoPE scaling"] if scaled else []) + (
        [f"with norm epsilon {MEGATRON_LM_NORM_EPSILON:g}, not {eps:g}"] if other_eps else []
    )
    flags = (["--use-rope-scaling"] if scaled else []) + ([f"--norm-epsilon {eps:g}"] if other_eps else [])
    restore = (
        f"--use-checkpoint-args builds the model {' and '.join(built)} (load_args_from_checkpoint does not "
        f"restore {'them' if len(built) > 1 else 'it'}): pass {' '.join(flags)}"
    )
    if factor is not None:
        ours = (
            float(factor),
            float(cfg.rope_low_freq_factor),
            float(cfg.rope_high_freq_factor),
            int(cfg.rope_original_max_position),
        )
        if ours != MEGATRON_LM_ROPE_SCALING:
            return (
                f"Megatron-LM core_v0.16.1 will not reproduce this model: under --use-rope-scaling it applies "
                f"llama3 RoPE scaling {_scaling(MEGATRON_LM_ROPE_SCALING)} (this model: {_scaling(ours)}) and no "
                f"flag changes that (gpt_builders.py ignores --rope-scaling-factor; RotaryEmbedding._apply_scaling "
                f"fixes the other three), so its logits will differ from ours; its {restore}"
            )
    return f"loading this checkpoint in Megatron-LM core_v0.16.1: {restore}"


def _scaling(values) -> str:
    factor, low, high, original = values
    return f"factor {factor:g}, low {low:g}, high {high:g}, original max {original}"


def common_state(
    cfg: ModelConfig, *, tp: int, pp: int, iteration: int, flops: float = 0.0, run: Optional[dict] = None
) -> dict:
    """The non-tensor state Megatron-LM's ``load_checkpoint`` reads from a torch_dist checkpoint's common.pt:
    ``args`` (the model, its layout, and ``run``: batch geometry, consumed samples, ...), ``checkpoint_version``,
    ``iteration`` and the FLOPs counter. ``no_save_rng`` is set: we store no Megatron-LM RNG state, so its
    ``load_checkpoint`` does not look for one (a resume there draws fresh dropout / data-order RNG)."""
    fields = {
        **model_args(cfg, tp, pp),
        "no_save_rng": True,
        "no_save_optim": True,
        "consumed_train_samples": 0,
        "skipped_train_samples": 0,
        "consumed_valid_samples": 0,
        "iteration": iteration,
        **(run or {}),
    }
    return {
        "args": argparse.Namespace(**fields),
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": iteration,
        "num_floating_point_operations_so_far": float(flops),
    }


# --------------------------------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class MegatronLMCheckpoint:
    path: Path
    format: str
    """``torch_dist`` / ``zarr`` / ``torch``."""
    args: object
    cfg: ModelConfig
    reader: object
    iteration: int
    tokens: int
    notes: list


def named_tokenizer(path: Path) -> Optional[Path]:
    """The HF tokenizer directory the checkpoint's args name (``tokenizer_model`` of a HuggingFaceTokenizer), when it
    exists here."""
    try:
        args = read_args(Path(path))
    except ConvertError:
        return None
    named = _arg(args, "tokenizer_model")
    if _arg(args, "tokenizer_type") != "HuggingFaceTokenizer" or not named or not Path(named).is_dir():
        return None
    from megatron_octo.convert.hf_io import tokenizer_in

    return tokenizer_in(Path(named))


def read_args(path: Path):
    """The ``args`` a Megatron-LM checkpoint directory records (one-line error without)."""
    from megatron_octo.convert.legacy_io import load_pickled, rank_files

    fmt = checkpoint_format(path)
    if fmt == "torch":
        state = load_pickled(next(iter(rank_files(path).values())), mmap=True)
    elif fmt is not None:
        state = load_pickled(path / COMMON_FILE)
    else:
        raise ConvertError(f"{path} is not a Megatron checkpoint (torch_dist, zarr or legacy torch)")
    if not isinstance(state, dict) or state.get("args") is None:
        raise ConvertError(
            f"{path}: the checkpoint records no Megatron-LM args: give the model's shape another way "
            f"(convert it with --from mcore only when it was saved by Megatron-LM's training)"
        )
    return state["args"]


def open_checkpoint(path: Path, tokenizer_dir: Optional[Path] = None) -> MegatronLMCheckpoint:
    """A Megatron-LM checkpoint directory (see ``locate``): its args mapped to a ModelConfig and a reader of its
    global tensors."""
    path = Path(path)
    fmt = checkpoint_format(path)
    args = read_args(path)
    assert fmt is not None  # read_args refuses a directory of no Megatron format
    tok = tokenizer_dir or named_tokenizer(path)
    vocab, note = unpadded_vocab(args, tok)
    cfg = model_config(args, path, vocab)
    reader: object  # DistCheckpoint, ZarrCheckpoint or LegacyCheckpoint: the same reading interface
    if fmt == "torch_dist":
        from megatron_octo.convert.dist_io import DistCheckpoint

        reader = DistCheckpoint(path)
    elif fmt == "zarr":
        from megatron_octo.convert.zarr_io import ZarrCheckpoint

        reader = ZarrCheckpoint(path)
    else:
        from megatron_octo.convert.legacy_io import LegacyCheckpoint

        reader = LegacyCheckpoint(path, args)
    release = path.name == RELEASE
    iteration = 0 if release else int(_arg(args, "iteration", 0) or 0)
    m = _ITER_RE.match(path.name)
    if m:
        iteration = int(m.group(1))
    tokens = int(_arg(args, "consumed_train_samples", 0) or 0) * int(_arg(args, "seq_length", 0) or 0)
    return MegatronLMCheckpoint(path, fmt, args, cfg, reader, iteration, tokens, [note] if note else [])

"""NeMo 2.2 checkpoints: the format. ``model_config.yaml`` <-> ModelConfig, the extracted ``.nemo`` layout, reading.

What NeMo 2.2's ``MegatronGPTModel`` restores (``NLPSaveRestoreConnector``), as the *extracted* ``.nemo`` layout, a
directory::

    OUTPUT/
      model_config.yaml   the model section NeMo reads for an mcore GPT (``nemo_model_config``)
      model_weights/      torch_dist distributed checkpoint, keys = Megatron-Core's with NeMo's ``model.`` prefix
      tokenizer/          the Hugging Face tokenizer files; model_config.yaml's tokenizer.type names this directory
      hf_assets/          the source's config.json / generation_config.json (ignored by NeMo; used on the way back)

Reading accepts a directory or a ``.nemo`` tar file (unpacked to a temporary directory). The writer is
``convert.nemo``; the reader's rows come through ``convert.sources``.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert import hf_io
from megatron_octo.convert.dist_io import DistCheckpoint, check_model_tensors
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import build_plan
from megatron_octo.convert.options import HF_ASSETS
from megatron_octo.models import shapes

NEMO_PREFIX = "model."
"""NeMo's MegatronGPTModel asks for its GPTModel's sharded state dict under this prefix."""
CONFIG_YAML = "model_config.yaml"
WEIGHTS_DIR = "model_weights"
TOKENIZER_DIR = "tokenizer"
MODEL_TARGET = "nemo.collections.nlp.models.language_modeling.megatron_gpt_model.MegatronGPTModel"
PRECISIONS = {torch.float32: 32, torch.bfloat16: "bf16", torch.float16: 16}
_SWIGLU = ("fast-swiglu", "swiglu")


@dataclass(frozen=True)
class NemoTarget:
    """How a written NeMo checkpoint is to be run."""

    tp: int = 1
    """tensor_model_parallel_size (also decides the vocabulary padding)."""
    pp: int = 1
    """pipeline_model_parallel_size."""
    precision: object = "bf16"
    """NeMo's ``precision`` (32, 16 or "bf16"): the stored weights' dtype."""
    transformer_engine: bool = True
    """NeMo's ``transformer_engine`` flag: the TE layer spec (GPU) or the local one; checkpoint keys are the same."""


# --------------------------------------------------------------------------------------------------------------------
# model_config.yaml
# --------------------------------------------------------------------------------------------------------------------


def _rope_fields(cfg: ModelConfig) -> dict:
    """NeMo 2.2 applies Llama-3 scaling itself (``scale_positional_embedding`` with all four parameters)."""
    if cfg.rope_scaling_factor is None:
        return {"scale_positional_embedding": False}
    return {
        "scale_positional_embedding": True,
        "scale_factor": float(cfg.rope_scaling_factor),
        "low_freq_factor": float(cfg.rope_low_freq_factor),
        "high_freq_factor": float(cfg.rope_high_freq_factor),
        "old_context_len": int(cfg.rope_original_max_position),
    }


def nemo_model_config(cfg: ModelConfig, target: NemoTarget, tokenizer_dir: Optional[Path]) -> dict:
    """The ``model`` section NeMo 2.2 reads for an mcore Llama / Qwen2 GPT (``MegatronGPTModel``).

    ``override_vocab_size`` fixes the embedding rows to our padding for ``target.tp`` whatever the tokenizer's own
    size; ``tokenizer_dir`` (absolute) becomes ``tokenizer.type`` of a ``huggingface`` tokenizer."""
    shapes.require_shape(cfg)
    seq = int(cfg.max_position_embeddings or 4096)
    return {
        "target": MODEL_TARGET,
        "mcore_gpt": True,
        "transformer_engine": bool(target.transformer_engine),
        "precision": target.precision,
        "megatron_amp_O2": False,
        # read unguarded by NeMo's MegatronTrainerBuilder, which NeMo-Aligner's train scripts build the trainer with
        # (a missing key is a ConfigAttributeError there); NeMo's GPT config default
        "gradient_as_bucket_view": True,
        # read unguarded when NeMo-Aligner's actor switches to inference (_reset_activation_checkpointing_args);
        # no recomputation, NeMo's GPT config default
        "activations_checkpoint_granularity": None,
        "activations_checkpoint_method": None,
        "activations_checkpoint_num_layers": None,
        "activations_checkpoint_layers_per_pipeline": None,
        "num_micro_batches_with_partial_activation_checkpoints": None,
        "micro_batch_size": 1,
        "global_batch_size": 1,
        "tensor_model_parallel_size": target.tp,
        "pipeline_model_parallel_size": target.pp,
        "virtual_pipeline_model_parallel_size": None,
        "sequence_parallel": False,
        "encoder_seq_length": seq,
        "max_position_embeddings": seq,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_query_groups": shapes.query_groups(cfg),
        "kv_channels": shapes.head_dim(cfg),
        "init_method_std": float(cfg.init_method_std),
        "use_scaled_init_method": True,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "ffn_dropout": 0.0,
        "apply_query_key_layer_scaling": False,
        "normalization": "rmsnorm",
        "layernorm_epsilon": float(cfg.norm_epsilon),
        "do_layer_norm_weight_decay": False,
        "make_vocab_size_divisible_by": cfg.make_vocab_size_divisible_by,
        "override_vocab_size": shapes.padded_vocab_size(
            shapes.shape(cfg).vocab_size, cfg.make_vocab_size_divisible_by, target.tp
        ),
        "pre_process": True,
        "post_process": True,
        "persist_layer_norm": False,
        "bias": False,
        "qkv_bias": bool(cfg.add_qkv_bias),
        "activation": "fast-swiglu",
        "headscale": False,
        "transformer_block_type": "pre_ln",
        "openai_gelu": False,
        "normalize_attention_scores": True,
        "position_embedding_type": "rope",
        "rotary_percentage": 1.0,
        "rotary_base": float(cfg.rotary_base),
        "seq_len_interpolation_factor": None,
        **_rope_fields(cfg),
        "attention_type": "multihead",
        "share_embeddings_and_output_weights": bool(cfg.tie_word_embeddings),
        "bias_activation_fusion": False,
        "bias_dropout_add_fusion": False,
        "masked_softmax_fusion": True,
        "get_attention_mask_from_fusion": True,
        "apply_rope_fusion": False,
        "fp32_residual_connection": False,
        "fp16_lm_cross_entropy": False,
        "use_cpu_initialization": False,
        "fp8": False,
        "seed": 1234,
        "tokenizer": {
            "library": "huggingface",
            "type": None if tokenizer_dir is None else str(tokenizer_dir),
            "model": None,
            "vocab_file": None,
            "merge_file": None,
            "delimiter": None,
            "use_fast": True,
        },
        "optim": {"name": "fused_adam", "lr": 1e-6, "weight_decay": 0.0, "betas": [0.9, 0.98]},
        # NeMo's MegatronGPTModel.setup reads model.data unguarded (NeMo-Aligner's critic server sets no data of its
        # own); no dataset: a run's config names its data (NeMo-Aligner's actor replaces this block)
        "data": {
            "data_prefix": None,
            "seq_length": seq,
            "num_workers": 0,
            "reset_position_ids": False,
            "reset_attention_mask": False,
            "eod_mask_loss": False,
        },
    }


def _need(conf: dict, key: str, allowed: Tuple, path: Path) -> None:
    value = conf.get(key)
    if value not in allowed:
        raise ConvertError(
            f"{path}: {key}={value!r} is not supported (only {', '.join(map(repr, allowed))}): "
            f"this NeMo model is not a Llama/Qwen2 GPT"
        )


def model_config_from_nemo(conf: dict, path: Path, vocab_size: Optional[int]) -> ModelConfig:
    """Our ModelConfig of a NeMo ``model`` section; a one-line ConvertError for what our families cannot
    represent. ``vocab_size`` (the unpadded vocabulary) comes from elsewhere: NeMo records only the padded one."""
    _need(conf, "mcore_gpt", (True,), path)
    _need(conf, "position_embedding_type", ("rope",), path)
    _need(conf, "normalization", ("rmsnorm",), path)
    _need(conf, "activation", _SWIGLU, path)
    _need(conf, "bias", (False,), path)
    _need(conf, "seq_len_interpolation_factor", (None,), path)
    if float(conf.get("rotary_percentage", 1.0)) != 1.0:
        raise ConvertError(f"{path}: rotary_percentage={conf['rotary_percentage']} is not supported (only 1.0)")
    try:
        heads, hidden = int(conf["num_attention_heads"]), int(conf["hidden_size"])
        scaled = bool(conf.get("scale_positional_embedding", False))
        return ModelConfig(
            family="qwen2" if conf.get("qkv_bias", False) else "llama",
            num_layers=int(conf["num_layers"]),
            hidden_size=hidden,
            ffn_hidden_size=int(conf["ffn_hidden_size"]),
            num_attention_heads=heads,
            num_query_groups=int(conf.get("num_query_groups") or heads),
            kv_channels=int(conf.get("kv_channels") or hidden // heads),
            vocab_size=vocab_size,
            max_position_embeddings=int(conf.get("max_position_embeddings") or conf["encoder_seq_length"]),
            rotary_base=float(conf.get("rotary_base", 10000.0)),
            rope_scaling_factor=float(conf.get("scale_factor", 8.0)) if scaled else None,
            rope_low_freq_factor=float(conf.get("low_freq_factor", 1.0)),
            rope_high_freq_factor=float(conf.get("high_freq_factor", 4.0)),
            rope_original_max_position=int(conf.get("old_context_len", 8192)),
            norm_epsilon=float(conf.get("layernorm_epsilon", 1e-5)),
            tie_word_embeddings=bool(conf.get("share_embeddings_and_output_weights", True)),
            add_qkv_bias=bool(conf.get("qkv_bias", False)),
            init_method_std=float(conf.get("init_method_std", 0.02)),
            make_vocab_size_divisible_by=int(conf.get("make_vocab_size_divisible_by", 128)),
        )
    except KeyError as exc:
        raise ConvertError(f"{path}: model_config.yaml lacks {exc.args[0]}: not a NeMo GPT model config") from None


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class NemoCheckpoint:
    """An extracted NeMo checkpoint: its directory, model section, our ModelConfig and a weights reader."""

    path: Path
    conf: dict
    cfg: ModelConfig
    reader: DistCheckpoint

    @property
    def assets(self) -> Path:
        return self.path / HF_ASSETS

    def tokenizer(self) -> Optional[Path]:
        """The bundled tokenizer directory, else ``tokenizer.type`` when it is a directory with tokenizer files."""
        named = (self.conf.get("tokenizer") or {}).get("type")
        for cand in (self.path / TOKENIZER_DIR, Path(named) if named else None):
            if cand is not None and cand.is_dir() and any((cand / n).is_file() for n in hf_io.TOKENIZER_FILES):
                return cand
        return None


def read_yaml(path: Path) -> dict:
    import yaml

    try:
        conf = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConvertError(f"{path}: cannot read it ({exc.__class__.__name__}): give a NeMo checkpoint") from None
    conf = conf.get("model", conf) if isinstance(conf, dict) else None
    if not isinstance(conf, dict):
        raise ConvertError(f"{path} is not a mapping: not a NeMo model_config.yaml")
    return conf


def _unpadded_vocab(path: Path, stored_rows: int) -> Tuple[int, Optional[str]]:
    """The real vocabulary: hf_assets/config.json's ``vocab_size``, else every stored row (with a note)."""
    config = path / HF_ASSETS / hf_io.CONFIG
    if config.is_file():
        return int(hf_io.read_json(config, "")["vocab_size"]), None
    return stored_rows, (
        f"{path} records no unpadded vocabulary size: the output keeps all {stored_rows} "
        f"embedding rows (padding included)"
    )


def _spelled_as_exported(cfg: ModelConfig, path: Path) -> ModelConfig:
    """``cfg`` with the preset and the explicit-or-derived head dimension of hf_assets/config.json, when that
    describes the same head dimension (NeMo always writes kv_channels; HF configs may leave head_dim out)."""
    from megatron_octo.models import get_family

    config = path / HF_ASSETS / hf_io.CONFIG
    if not config.is_file():
        return cfg
    try:
        exported = get_family(cfg.family).from_hf(hf_io.read_json(config, ""))
    except ValueError:
        return cfg
    if shapes.head_dim(exported) != shapes.head_dim(cfg):
        return cfg
    return replace(cfg, kv_channels=exported.kv_channels, preset=exported.preset)


def open_nemo(path: Path) -> Tuple[NemoCheckpoint, Optional[str]]:
    """An extracted NeMo checkpoint directory, every tensor checked against its model_config.yaml; (checkpoint,
    note or None)."""
    path = Path(path)
    if not (path / CONFIG_YAML).is_file() or not (path / WEIGHTS_DIR).is_dir():
        raise ConvertError(
            f"{path} has no {CONFIG_YAML} and {WEIGHTS_DIR}/: not a NeMo checkpoint (a .nemo file "
            f"or its extracted directory)"
        )
    conf = read_yaml(path / CONFIG_YAML)
    reader = DistCheckpoint(path / WEIGHTS_DIR)
    emb = reader.tensor_meta("embedding.word_embeddings.weight")
    if emb is None:
        raise ConvertError(f"{path / WEIGHTS_DIR} lacks embedding.word_embeddings.weight: not a GPT checkpoint")
    vocab, note = _unpadded_vocab(path, int(emb.size[0]))
    cfg = _spelled_as_exported(model_config_from_nemo(conf, path / CONFIG_YAML, vocab), path)
    check_model_tensors(reader, build_plan(cfg), path / WEIGHTS_DIR)
    return NemoCheckpoint(path, conf, cfg, reader), note


@contextlib.contextmanager
def extracted(path: Path, scratch: Path) -> Iterator[Path]:
    """``path`` itself when it is a directory; a ``.nemo`` tar file unpacked into a temporary directory under
    ``scratch`` (removed afterwards)."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise ConvertError(f"--input {path} is neither a NeMo checkpoint directory nor a .nemo tar file")
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".nemo-extract-", dir=scratch))
    try:
        _unpack(path, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_TAR_END = 2 * tarfile.BLOCKSIZE
"""A tar archive ends with two zero blocks after its last member (POSIX; Python's and GNU tar's writers)."""


def _unpack(path: Path, into: Path) -> None:
    """Extract the .nemo tar ``path`` into ``into``; a truncated or corrupt archive is a one-line ``ConvertError``.

    A cut inside a member is an error of tarfile (or of gzip for a compressed .nemo); a cut between members reads
    as a shorter, valid-looking archive, caught by the missing end-of-archive blocks (uncompressed tars)."""
    import gzip
    import io
    import zlib

    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(into, filter="data")
            plain = isinstance(tar.fileobj, io.BufferedReader)  # not gzip/bz2/xz: sizes are the archive's own
            if plain and path.stat().st_size < tar.offset + _TAR_END:
                raise tarfile.ReadError(f"no end-of-archive marker after {tar.offset} bytes")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ConvertError(
            f"--input {path} is a truncated or corrupt .nemo tar ({exc}): copy it again or repack it from its "
            f"directory (tar -cf MODEL.nemo -C DIR .)"
        ) from None


def readable_by_transformers4(tokenizer_dir: Path) -> None:
    """NeMo 2.2 runs on transformers 4.x, which does not know transformers 5's ``TokenizersBackend`` class name
    that ``save_pretrained`` now writes for plain fast tokenizers: name it ``PreTrainedTokenizerFast``, which both
    major versions read as the same tokenizer.json-backed class."""
    import json

    path = tokenizer_dir / "tokenizer_config.json"
    if not path.is_file() or not (tokenizer_dir / "tokenizer.json").is_file():
        return
    config = hf_io.read_json(path, "")
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2) + "\n")

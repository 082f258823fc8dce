"""NeMo 2.2 checkpoints for NeMo-Aligner: export (``--to nemo``) and import (``--from nemo``).

What NeMo 2.2's ``MegatronGPTModel`` restores (``NLPSaveRestoreConnector``), written as the *extracted* ``.nemo``
layout, a directory::

    OUTPUT/
      model_config.yaml   the model section NeMo reads for an mcore GPT (``nemo_model_config``)
      model_weights/      torch_dist distributed checkpoint, keys = Megatron-Core's with NeMo's ``model.`` prefix
      tokenizer/          the Hugging Face tokenizer files; model_config.yaml's tokenizer.type names this directory
      hf_assets/          the source's config.json / generation_config.json (ignored by NeMo; used on the way back)

NeMo restores a directory in place: NeMo-Aligner's ``load_from_nemo`` takes it as it is, and plain NeMo does with
an ``NLPSaveRestoreConnector`` whose ``model_extracted_dir`` is OUTPUT; packing it (``tar -cf model.nemo -C OUTPUT .``)
gives the file form, whose tokenizer is still read from the absolute ``tokenizer.type`` path. NeMo 2.2 builds a
``huggingface`` tokenizer from ``tokenizer.type`` only (a hub name or a directory; ``nemo:`` artifact references
apply to sentencepiece/vocab/merges files, not to it), hence the absolute path; override
``model.tokenizer.type=DIR`` after moving the directory. The bundled tokenizer_config.json names a class that
NeMo's transformers 4.x knows (``readable_by_transformers4``).

Reading accepts a directory or a ``.nemo`` tar file (unpacked to a temporary directory beside the output).
Weights stream through the same row sources and torch_dist writer as the other conversions.
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
from megatron_octo.convert.dist_io import DistCheckpoint
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import build_plan, check_layout
from megatron_octo.convert.streaming import (
    HF_ASSETS,
    McoreRows,
    Options,
    _check_mcore_tensors,
    staged_output,
    write_mcore,
)
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
    return {"scale_positional_embedding": True, "scale_factor": float(cfg.rope_scaling_factor),
            "low_freq_factor": float(cfg.rope_low_freq_factor), "high_freq_factor": float(cfg.rope_high_freq_factor),
            "old_context_len": int(cfg.rope_original_max_position)}


def nemo_model_config(cfg: ModelConfig, target: NemoTarget, tokenizer_dir: Optional[Path]) -> dict:
    """The ``model`` section NeMo 2.2 reads for an mcore Llama / Qwen2 GPT (``MegatronGPTModel``).

    ``override_vocab_size`` fixes the embedding rows to our padding for ``target.tp`` whatever the tokenizer's own
    size; ``tokenizer_dir`` (absolute) becomes ``tokenizer.type`` of a ``huggingface`` tokenizer."""
    shapes.require_shape(cfg)
    seq = int(cfg.max_position_embeddings or 4096)
    return {
        "target": MODEL_TARGET, "mcore_gpt": True, "transformer_engine": bool(target.transformer_engine),
        "precision": target.precision, "megatron_amp_O2": False,
        "micro_batch_size": 1, "global_batch_size": 1,
        "tensor_model_parallel_size": target.tp, "pipeline_model_parallel_size": target.pp,
        "virtual_pipeline_model_parallel_size": None, "sequence_parallel": False,
        "encoder_seq_length": seq, "max_position_embeddings": seq,
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "num_query_groups": shapes.query_groups(cfg),
        "kv_channels": shapes.head_dim(cfg), "init_method_std": float(cfg.init_method_std),
        "use_scaled_init_method": True, "hidden_dropout": 0.0, "attention_dropout": 0.0, "ffn_dropout": 0.0,
        "apply_query_key_layer_scaling": False, "normalization": "rmsnorm",
        "layernorm_epsilon": float(cfg.norm_epsilon),
        "do_layer_norm_weight_decay": False, "make_vocab_size_divisible_by": cfg.make_vocab_size_divisible_by,
        "override_vocab_size": shapes.padded_vocab_size(shapes.shape(cfg).vocab_size, cfg.make_vocab_size_divisible_by,
                                                         target.tp),
        "pre_process": True, "post_process": True, "persist_layer_norm": False,
        "bias": False, "qkv_bias": bool(cfg.add_qkv_bias), "activation": "fast-swiglu", "headscale": False,
        "transformer_block_type": "pre_ln", "openai_gelu": False, "normalize_attention_scores": True,
        "position_embedding_type": "rope", "rotary_percentage": 1.0, "rotary_base": float(cfg.rotary_base),
        "seq_len_interpolation_factor": None, **_rope_fields(cfg),
        "attention_type": "multihead", "share_embeddings_and_output_weights": bool(cfg.tie_word_embeddings),
        "bias_activation_fusion": False, "bias_dropout_add_fusion": False, "masked_softmax_fusion": True,
        "get_attention_mask_from_fusion": True, "apply_rope_fusion": False, "fp32_residual_connection": False,
        "fp16_lm_cross_entropy": False, "use_cpu_initialization": False, "fp8": False, "seed": 1234,
        "tokenizer": {"library": "huggingface", "type": None if tokenizer_dir is None else str(tokenizer_dir),
                      "model": None, "vocab_file": None, "merge_file": None, "delimiter": None, "use_fast": True},
        "optim": {"name": "fused_adam", "lr": 1e-6, "weight_decay": 0.0, "betas": [0.9, 0.98]},
    }


def _need(conf: dict, key: str, allowed: Tuple, path: Path) -> None:
    value = conf.get(key)
    if value not in allowed:
        raise ConvertError(f"{path}: {key}={value!r} is not supported (only {', '.join(map(repr, allowed))}): "
                           f"this NeMo model is not a Llama/Qwen2 GPT")


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
            num_layers=int(conf["num_layers"]), hidden_size=hidden, ffn_hidden_size=int(conf["ffn_hidden_size"]),
            num_attention_heads=heads, num_query_groups=int(conf.get("num_query_groups") or heads),
            kv_channels=int(conf.get("kv_channels") or hidden // heads), vocab_size=vocab_size,
            max_position_embeddings=int(conf.get("max_position_embeddings") or conf["encoder_seq_length"]),
            rotary_base=float(conf.get("rotary_base", 10000.0)),
            rope_scaling_factor=float(conf.get("scale_factor", 8.0)) if scaled else None,
            rope_low_freq_factor=float(conf.get("low_freq_factor", 1.0)),
            rope_high_freq_factor=float(conf.get("high_freq_factor", 4.0)),
            rope_original_max_position=int(conf.get("old_context_len", 8192)),
            norm_epsilon=float(conf.get("layernorm_epsilon", 1e-5)),
            tie_word_embeddings=bool(conf.get("share_embeddings_and_output_weights", True)),
            add_qkv_bias=bool(conf.get("qkv_bias", False)), init_method_std=float(conf.get("init_method_std", 0.02)),
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
    return stored_rows, (f"{path} records no unpadded vocabulary size: the output keeps all {stored_rows} "
                         f"embedding rows (padding included)")


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
        raise ConvertError(f"{path} has no {CONFIG_YAML} and {WEIGHTS_DIR}/: not a NeMo checkpoint (a .nemo file "
                           f"or its extracted directory)")
    conf = read_yaml(path / CONFIG_YAML)
    reader = DistCheckpoint(path / WEIGHTS_DIR)
    emb = reader.tensor_meta("embedding.word_embeddings.weight")
    if emb is None:
        raise ConvertError(f"{path / WEIGHTS_DIR} lacks embedding.word_embeddings.weight: not a GPT checkpoint")
    vocab, note = _unpadded_vocab(path, int(emb.size[0]))
    cfg = _spelled_as_exported(model_config_from_nemo(conf, path / CONFIG_YAML, vocab), path)
    _check_mcore_tensors(reader, build_plan(cfg), path / WEIGHTS_DIR)
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
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Source:
    """What a conversion into NeMo or out of it reads: the model, a row source and the files kept beside it."""

    kind: str
    """``hf`` / ``mcore`` / ``nemo``: the side ``--verify`` compares against."""
    path: Path
    """The directory the weights are read from (an extracted one for a .nemo file)."""
    cfg: ModelConfig
    rows: object
    """``HFRows`` or ``McoreRows`` serving Megatron-Core row ranges."""
    assets: Optional[Path]
    """Directory with the original config.json / generation_config.json, if any."""
    tokenizer: Optional[Path]
    notes: list


@contextlib.contextmanager
def open_source(kind: str, input_path, scratch: Path, *, tp: int, divisible: Optional[int],
                tokenizer_dir=None) -> Iterator[Source]:
    """The input of a NeMo conversion, opened and checked (a .nemo file is unpacked under ``scratch`` for the
    duration). ``divisible`` overrides the vocabulary padding multiple (None keeps the input's, 128 for HF)."""
    from megatron_octo.convert import api
    from megatron_octo.convert.streaming import HFRows, open_hf, open_mcore

    explicit = api._find_tokenizer(Path("."), tokenizer_dir) if tokenizer_dir is not None else None
    if kind == "hf":
        hf, cfg = open_hf(Path(input_path), divisible or api.DEFAULT_DIVISIBLE_BY)
        yield Source("hf", hf.path, cfg, HFRows(hf, build_plan(cfg, tp)), hf.path,
                     explicit or api._tokenizer_in(hf.path), [])
    elif kind == "mcore":
        path, _, cfg, reader = open_mcore(input_path)
        cfg = replace(cfg, make_vocab_size_divisible_by=divisible or cfg.make_vocab_size_divisible_by)
        yield Source("mcore", path, cfg, McoreRows(reader), path / HF_ASSETS,
                     explicit or api._find_tokenizer(path, None), [])
    elif kind == "nemo":
        with extracted(Path(input_path), scratch) as src:
            ckpt, note = open_nemo(src)
            cfg = replace(ckpt.cfg, make_vocab_size_divisible_by=divisible or ckpt.cfg.make_vocab_size_divisible_by)
            yield Source("nemo", src, cfg, McoreRows(ckpt.reader), ckpt.assets, explicit or ckpt.tokenizer(),
                         [note] if note else [])
    else:
        raise ConvertError(f"--from {kind} is not a format: use hf, mcore or nemo")


def _copy_hf_config(src: Source, cfg: ModelConfig, dtype: torch.dtype, dst: Path) -> None:
    """config.json (the source's, else derived from ``cfg``: it records the unpadded vocabulary) and
    generation_config.json, for the way back to Hugging Face."""
    import json

    from megatron_octo.convert import api
    from megatron_octo.convert.streaming import HF_DTYPE_NAMES

    dst.mkdir()
    for name in (hf_io.CONFIG, hf_io.GENERATION_CONFIG):
        if src.assets is not None and (src.assets / name).is_file():
            shutil.copy2(src.assets / name, dst / name)
    if not (dst / hf_io.CONFIG).is_file():
        derived = api._family(cfg).to_hf(cfg, dtype=HF_DTYPE_NAMES[dtype])
        (dst / hf_io.CONFIG).write_text(json.dumps(derived, indent=2) + "\n")


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


def _out_dtype(opts: Options, src: Source, plan) -> torch.dtype:
    from megatron_octo.convert.streaming import _target_dtype

    return _target_dtype(opts, src.rows.dtype(plan.entries[0].mcore))


def to_nemo(src_kind: str, input_path, output_dir, *, tp: int = 1, pp: int = 1, tokenizer_dir=None,
            make_vocab_size_divisible_by: Optional[int] = None, **options):
    """An HF model directory, a Megatron-Core checkpoint or a NeMo checkpoint -> the extracted NeMo checkpoint
    directory ``output_dir`` for ``tp`` x ``pp`` (see the module docstring). ``options``: the fields of
    ``Options``; ``verify`` compares the source's logits with the NeMo weights' (through Megatron-Core)."""
    import yaml

    from megatron_octo.convert.api import _checked
    from megatron_octo.convert.streaming import ConvertResult
    from megatron_octo.convert.verify import prompt_ids, verify
    from megatron_octo.utils.io import atomic_write_text

    opts = Options(**options)
    output = Path(output_dir).absolute()
    with open_source(src_kind, input_path, output.parent, tp=tp, divisible=make_vocab_size_divisible_by,
                     tokenizer_dir=tokenizer_dir) as src:
        check_layout(src.cfg, tp, pp)
        plan = build_plan(src.cfg, tp)
        dtype = _out_dtype(opts, src, plan)
        target = NemoTarget(tp, pp, PRECISIONS[dtype], transformer_engine=src.cfg.spec != "local")
        with staged_output(output, opts.overwrite, (Path(input_path),)) as tmp:
            (tmp / WEIGHTS_DIR).mkdir()
            tensors, nbytes, seconds = write_mcore(tmp / WEIGHTS_DIR, plan, src.rows, opts, f"{src.kind} -> nemo",
                                                   prefix=NEMO_PREFIX)
            tok = None
            if src.tokenizer is not None:
                (tmp / TOKENIZER_DIR).mkdir()
                hf_io.copy_tokenizer(src.tokenizer, tmp / TOKENIZER_DIR)
                readable_by_transformers4(tmp / TOKENIZER_DIR)
                tok = output / TOKENIZER_DIR
            _copy_hf_config(src, src.cfg, dtype, tmp / HF_ASSETS)
            text = yaml.safe_dump(nemo_model_config(src.cfg, target, tok), sort_keys=False)
            atomic_write_text(tmp / CONFIG_YAML, text)
            result = ConvertResult(output, tensors, nbytes, seconds, notes=list(src.notes))
            if tok is None:
                result.notes.append("no tokenizer files found: pass --tokenizer DIR to bundle them "
                                    "(NeMo needs model.tokenizer.type otherwise)")
            if opts.verify:
                ids = prompt_ids(opts.prompt, src.tokenizer, src.cfg.vocab_size)
                result.verify = _checked(verify((src.kind, src.path), ("nemo", tmp), ids, atol=opts.atol,
                                                kl_tol=opts.kl_tol))
    return result


def nemo_to_hf(input_path, output_dir, *, tokenizer_dir=None, max_shard_size: str = "5GB", **options):
    """A NeMo checkpoint (directory or .nemo file) -> a Hugging Face model directory: config.json (the exported
    one kept in hf_assets, else derived from model_config.yaml), safetensors shards, generation_config.json and
    the bundled tokenizer files (or ``tokenizer_dir``'s)."""
    from megatron_octo.convert import api
    from megatron_octo.convert.streaming import HF_DTYPE_NAMES, ConvertResult, write_hf_weights
    from megatron_octo.convert.verify import prompt_ids, verify

    opts = Options(**options)
    output = Path(output_dir).absolute()
    with open_source("nemo", input_path, output.parent, tp=1, divisible=None, tokenizer_dir=tokenizer_dir) as src:
        family = api._family(src.cfg)
        plan = build_plan(src.cfg)
        with staged_output(output, opts.overwrite, (Path(input_path),)) as tmp:
            tensors, nbytes, seconds, dtype = write_hf_weights(tmp, plan, src.rows, opts, max_shard_size,
                                                               "nemo -> hf")
            api._write_hf_files(tmp, family.to_hf(src.cfg, dtype=HF_DTYPE_NAMES[dtype]), src.assets, src.tokenizer)
            result = ConvertResult(output, tensors, nbytes, seconds, notes=list(src.notes))
            if src.tokenizer is None:
                result.notes.append("no tokenizer files found: pass --tokenizer DIR to include them")
            if opts.verify:
                ids = prompt_ids(opts.prompt, src.tokenizer, src.cfg.vocab_size)
                result.verify = api._checked(verify(("nemo", src.path), ("hf", tmp), ids, atol=opts.atol,
                                                    kl_tol=opts.kl_tol))
    return result


def nemo_to_mcore(input_path, output_dir, *, tp: int = 1, pp: int = 1,
                  make_vocab_size_divisible_by: Optional[int] = None, **options):
    """A NeMo checkpoint (directory or .nemo file) -> a Megatron-Core model checkpoint for ``tp`` x ``pp``
    (``octo train ... checkpoint.load=DIR``), with config.json and tokenizer files in its hf_assets."""
    from megatron_octo.convert import api
    from megatron_octo.convert.streaming import ConvertResult
    from megatron_octo.convert.verify import prompt_ids, verify

    opts = Options(**options)
    output = Path(output_dir).absolute()
    with open_source("nemo", input_path, output.parent, tp=tp, divisible=make_vocab_size_divisible_by) as src:
        check_layout(src.cfg, tp, pp)
        plan = build_plan(src.cfg, tp)
        with staged_output(output, opts.overwrite, (Path(input_path),)) as tmp:
            tensors, nbytes, seconds = write_mcore(tmp, plan, src.rows, opts, "nemo -> mcore")
            lineage = [{"path": str(Path(input_path).resolve()), "step": 0, "tokens": 0, "recipe": "nemo"}]
            api._write_meta(tmp, api._new_meta(src.cfg, tp, pp, lineage))
            _copy_hf_config(src, src.cfg, _out_dtype(opts, src, plan), tmp / HF_ASSETS)
            if src.tokenizer is not None:
                hf_io.copy_tokenizer(src.tokenizer, tmp / HF_ASSETS)
            result = ConvertResult(output, tensors, nbytes, seconds, notes=list(src.notes))
            if opts.verify:
                ids = prompt_ids(opts.prompt, src.tokenizer, src.cfg.vocab_size)
                result.verify = api._checked(verify(("nemo", src.path), ("mcore", tmp), ids, atol=opts.atol,
                                                    kl_tol=opts.kl_tol))
    return result


def convert_nemo(src: str, dst: str, input_path, output_path, *, tp: int = 1, pp: int = 1, tokenizer_dir=None,
                 max_shard_size: str = "5GB", make_vocab_size_divisible_by: Optional[int] = None, **options):
    """``octo convert`` where either side is ``nemo``."""
    if dst == "nemo":
        return to_nemo(src, input_path, output_path, tp=tp, pp=pp, tokenizer_dir=tokenizer_dir,
                       make_vocab_size_divisible_by=make_vocab_size_divisible_by, **options)
    if dst == "hf":
        return nemo_to_hf(input_path, output_path, tokenizer_dir=tokenizer_dir, max_shard_size=max_shard_size,
                          **options)
    if dst == "mcore":
        return nemo_to_mcore(input_path, output_path, tp=tp, pp=pp,
                             make_vocab_size_divisible_by=make_vocab_size_divisible_by, **options)
    raise ConvertError(f"--to {dst} is not a format: use hf, mcore or nemo")


def nemo_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits [b, s, vocab] of an extracted NeMo checkpoint, through Megatron-Core in one process (the
    ``model.`` prefix is found from the stored keys)."""
    from megatron_octo.convert.verify import mcore_logits

    ckpt, _ = open_nemo(Path(path))
    return mcore_logits(ckpt.path / WEIGHTS_DIR, ids, cfg=ckpt.cfg)

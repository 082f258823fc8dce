"""The three conversions: ``hf_to_mcore``, ``mcore_to_hf``, ``mcore_to_mcore`` (resharding), and ``convert``.

Each checks its whole input first (config, every tensor's presence and shape, the requested layout), so bad input
ends with one ConvertError line before anything is written; then it writes under a temporary name, verifies if
asked, and renames the result into place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import List, Optional

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert import hf_io
from megatron_octo.convert.errors import ConvertError, VerifyError
from megatron_octo.convert.layout import build_plan, check_layout
from megatron_octo.convert.streaming import (
    DEFAULT_MAX_SHARD,
    HF_ASSETS,
    HF_DTYPE_NAMES,
    ConvertResult,
    HFRows,
    McoreRows,
    Options,
    open_hf,
    open_mcore,
    staged_output,
    write_hf_weights,
    write_mcore,
)
from megatron_octo.convert.verify import prompt_ids, verify
from megatron_octo.utils.io import atomic_write_text

DEFAULT_DIVISIBLE_BY = ModelConfig.make_vocab_size_divisible_by


def hf_to_mcore(input_dir, output_dir, *, tp: int = 1, pp: int = 1,
                make_vocab_size_divisible_by: int = DEFAULT_DIVISIBLE_BY, **options) -> ConvertResult:
    """A Hugging Face model directory -> a Megatron-Core torch_dist checkpoint (``kind="model"``) for ``tp`` x
    ``pp`` (the layout decides the vocabulary padding and is recorded; any layout can load the result).

    The HF config.json, generation_config.json and tokenizer files are kept in ``OUTPUT/hf_assets``. ``options``:
    the fields of ``Options`` (dtype, overwrite, verify, prompt, atol, kl_tol, block_bytes, quiet).
    """
    opts = Options(**options)
    hf, cfg = open_hf(Path(input_dir), make_vocab_size_divisible_by)
    check_layout(cfg, tp, pp)
    plan = build_plan(cfg, tp)
    with staged_output(Path(output_dir), opts.overwrite, (hf.path,)) as tmp:
        tensors, nbytes, seconds = write_mcore(tmp, plan, HFRows(hf, plan), opts, "hf -> mcore")
        lineage = [{"path": str(hf.path.resolve()), "step": 0, "tokens": 0, "recipe": "hf"}]
        _write_meta(tmp, _new_meta(cfg, tp, pp, lineage))
        _save_assets(hf.path, tmp / HF_ASSETS)
        result = ConvertResult(Path(output_dir), tensors, nbytes, seconds)
        if opts.verify:
            ids = prompt_ids(opts.prompt, _tokenizer_in(hf.path), cfg.vocab_size)
            result.verify = _checked(verify(("hf", hf.path), ("mcore", tmp), ids, atol=opts.atol, kl_tol=opts.kl_tol))
    return result


def mcore_to_hf(ckpt, output_dir, *, tokenizer_dir=None, max_shard_size: str = DEFAULT_MAX_SHARD,
                **options) -> ConvertResult:
    """A Megatron-Core checkpoint (a checkpoint directory, a run directory: its newest complete checkpoint, or
    ``DIR:STEP``; model or training checkpoints) -> a Hugging Face model directory: config.json, safetensors shards
    (with ``model.safetensors.index.json`` when there are several), generation_config.json and tokenizer files.

    Tokenizer files come from ``tokenizer_dir``, else the checkpoint's ``hf_assets``, else the tokenizer named by
    the run's recipe.yaml (``data.tokenizer``); without any, the result says so in ``notes``.
    """
    opts = Options(**options)
    path, meta, cfg, reader = open_mcore(ckpt)
    family = _family(cfg)
    tokenizer = _find_tokenizer(path, tokenizer_dir)
    plan = build_plan(cfg)
    with staged_output(Path(output_dir), opts.overwrite, (path,)) as tmp:
        tensors, nbytes, seconds, dtype = write_hf_weights(tmp, plan, McoreRows(reader), opts, max_shard_size,
                                                           "mcore -> hf")
        _write_hf_files(tmp, family.to_hf(cfg, dtype=HF_DTYPE_NAMES[dtype]), path / HF_ASSETS, tokenizer)
        result = ConvertResult(Path(output_dir), tensors, nbytes, seconds)
        if tokenizer is None:
            result.notes.append("no tokenizer files found: pass --tokenizer DIR to include them")
        if opts.verify:
            ids = prompt_ids(opts.prompt, tokenizer, cfg.vocab_size)
            result.verify = _checked(verify(("mcore", path), ("hf", tmp), ids, atol=opts.atol, kl_tol=opts.kl_tol))
    return result


def mcore_to_mcore(ckpt, output_dir, *, tp: int = 1, pp: int = 1, make_vocab_size_divisible_by: Optional[int] = None,
                   **options) -> ConvertResult:
    """Reshard a Megatron-Core checkpoint (model or training; only the model is kept) for ``tp`` x ``pp``: the
    vocabulary padding is redone for the new layout and the layout recorded."""
    opts = Options(**options)
    path, meta, cfg, reader = open_mcore(ckpt)
    if make_vocab_size_divisible_by is not None:
        cfg = replace(cfg, make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    check_layout(cfg, tp, pp)
    plan = build_plan(cfg, tp)
    with staged_output(Path(output_dir), opts.overwrite, (path,)) as tmp:
        tensors, nbytes, seconds = write_mcore(tmp, plan, McoreRows(reader), opts, "mcore -> mcore")
        source = {"path": str(path.resolve()), "step": meta.step, "tokens": meta.tokens, "recipe": meta.recipe}
        _write_meta(tmp, replace(meta, kind="model", layout=_layout(tp, pp), model=asdict(cfg),
                                 lineage=meta.lineage + [source]))
        if (path / HF_ASSETS).is_dir():
            shutil.copytree(path / HF_ASSETS, tmp / HF_ASSETS)
        result = ConvertResult(Path(output_dir), tensors, nbytes, seconds)
        if opts.verify:
            ids = prompt_ids(opts.prompt, _tokenizer_in(path / HF_ASSETS), cfg.vocab_size)
            result.verify = _checked(verify(("mcore", path), ("mcore", tmp), ids, atol=opts.atol, kl_tol=opts.kl_tol))
    return result


def convert(src: str, dst: str, input_path, output_path, *, tp: int = 1, pp: int = 1, tokenizer_dir=None,
            max_shard_size: str = DEFAULT_MAX_SHARD, make_vocab_size_divisible_by: Optional[int] = None,
            **options) -> ConvertResult:
    """``octo convert --from SRC --to DST``: dispatch to the conversion of that direction (options that are None
    take their defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if dst == "hf" and (tp, pp) != (1, 1):
        raise ConvertError(f"--tp {tp} --pp {pp} describe a Megatron-Core layout: they apply to --to mcore only")
    if src == "hf" and dst == "mcore":
        divisible = make_vocab_size_divisible_by or DEFAULT_DIVISIBLE_BY
        return hf_to_mcore(input_path, output_path, tp=tp, pp=pp, make_vocab_size_divisible_by=divisible, **options)
    if src == "mcore" and dst == "hf":
        return mcore_to_hf(input_path, output_path, tokenizer_dir=tokenizer_dir, max_shard_size=max_shard_size,
                           **options)
    if src == "mcore" and dst == "mcore":
        return mcore_to_mcore(input_path, output_path, tp=tp, pp=pp,
                              make_vocab_size_divisible_by=make_vocab_size_divisible_by, **options)
    if "nemo" in (src, dst):
        from megatron_octo.convert.nemo import convert_nemo

        return convert_nemo(src, dst, input_path, output_path, tp=tp, pp=pp, tokenizer_dir=tokenizer_dir,
                            max_shard_size=max_shard_size,
                            make_vocab_size_divisible_by=make_vocab_size_divisible_by, **options)
    raise ConvertError(f"--from {src} --to {dst} is not a conversion: use hf->mcore, mcore->hf or mcore->mcore")


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _checked(result):
    """The verification result, or a VerifyError (which removes the staged output) when it is out of tolerance."""
    if not result.ok:
        raise VerifyError(f"{result.line()}; nothing was written")
    return result


def _family(cfg: ModelConfig):
    from megatron_octo.models import get_family

    try:
        return get_family(cfg.family)
    except ValueError as exc:
        raise ConvertError(str(exc)) from None


def _layout(tp: int, pp: int) -> dict:
    return {"tp": tp, "pp": pp, "cp": 1, "dp": 1, "distributed_optimizer": False}


def _new_meta(cfg: ModelConfig, tp: int, pp: int, lineage: List[dict]):
    from megatron_octo.training.checkpoint import CheckpointMeta

    return CheckpointMeta(step=0, tokens=0, kind="model", layout=_layout(tp, pp), model=asdict(cfg), lineage=lineage)


def _write_meta(out: Path, meta) -> None:
    from megatron_octo.training.checkpoint import META_FILE

    atomic_write_text(out / META_FILE, json.dumps(asdict(meta), indent=2) + "\n")


def _tokenizer_in(directory: Path) -> Optional[Path]:
    """``directory`` when it holds tokenizer files."""
    directory = Path(directory)
    return directory if any((directory / n).is_file() for n in hf_io.TOKENIZER_FILES) else None


def _save_assets(hf_dir: Path, assets: Path) -> None:
    """config.json, generation_config.json and tokenizer files of the HF input, for the way back."""
    assets.mkdir()
    for name in (hf_io.CONFIG, hf_io.GENERATION_CONFIG):
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, assets / name)
    hf_io.copy_tokenizer(hf_dir, assets)


def _find_tokenizer(ckpt_dir: Path, explicit) -> Optional[Path]:
    """The tokenizer directory for an HF export (see ``mcore_to_hf``)."""
    if explicit is not None:
        found = _tokenizer_in(Path(explicit))
        if found is None:
            raise ConvertError(f"--tokenizer {explicit} holds no tokenizer files (tokenizer.json, "
                               f"tokenizer_config.json, ...): give a Hugging Face tokenizer directory")
        return found
    found = _tokenizer_in(ckpt_dir / HF_ASSETS)
    recipe = ckpt_dir.parent.parent / "recipe.yaml"  # RUN_DIR/checkpoints/iter_N -> RUN_DIR/recipe.yaml
    if found is None and recipe.is_file():
        import yaml

        named = ((yaml.safe_load(recipe.read_text()) or {}).get("data") or {}).get("tokenizer")
        found = _tokenizer_in(Path(named)) if named else None
    return found


def _write_hf_files(out: Path, derived: dict, assets: Path, tokenizer: Optional[Path]) -> None:
    """config.json, generation_config.json and the tokenizer files of an HF export."""
    original = hf_io.read_json(assets / hf_io.CONFIG, "") if (assets / hf_io.CONFIG).is_file() else None
    config = hf_io.merged_config(original, derived, hf_io.token_ids(tokenizer))
    (out / hf_io.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if (assets / hf_io.GENERATION_CONFIG).is_file():
        shutil.copy2(assets / hf_io.GENERATION_CONFIG, out / hf_io.GENERATION_CONFIG)
    else:  # what transformers' GenerationConfig.from_model_config writes, without importing transformers
        ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
        text = json.dumps({"_from_model_config": True, **ids}, indent=2) + "\n"
        (out / hf_io.GENERATION_CONFIG).write_text(text)
    if tokenizer is not None:
        hf_io.copy_tokenizer(tokenizer, out)

"""The NeMo writer: a ``Source``'s rows into NeMo 2.2's extracted ``.nemo`` layout, for NeMo-Aligner.

The layout and ``model_config.yaml`` mapping are ``convert.nemo_format`` (which the reader uses too).

NeMo restores a directory in place: NeMo-Aligner's ``load_from_nemo`` takes it as it is, and plain NeMo does with
an ``NLPSaveRestoreConnector`` whose ``model_extracted_dir`` is OUTPUT; packing it (``tar -cf model.nemo -C OUTPUT .``)
gives the file form, whose tokenizer is still read from the absolute ``tokenizer.type`` path. NeMo 2.2 builds a
``huggingface`` tokenizer from ``tokenizer.type`` only (a hub name or a directory; ``nemo:`` artifact references
apply to sentencepiece/vocab/merges files, not to it), hence the absolute path; override
``model.tokenizer.type=DIR`` after moving the directory. The bundled tokenizer_config.json names a class that
NeMo's transformers 4.x knows (``nemo_format.readable_by_transformers4``).

With ``Options.critic`` it writes NeMo-Aligner's PPO critic instead of the policy (``convert.critic``): the policy
trunk, an untied output layer, a zero value head and the critic's config fields. A critic needs the bundled
tokenizer (NeMo-Aligner's critic server builds it from ``tokenizer.type``), so a source without one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from megatron_octo.convert import hf_io
from megatron_octo.convert.critic import CriticRows, critic_model_fields, critic_plan
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import build_plan, check_layout
from megatron_octo.convert.nemo_format import (
    CONFIG_YAML,
    NEMO_PREFIX,
    PRECISIONS,
    TOKENIZER_DIR,
    WEIGHTS_DIR,
    NemoTarget,
    nemo_model_config,
    readable_by_transformers4,
)
from megatron_octo.convert.options import HF_ASSETS, Options
from megatron_octo.convert.writers import output_dtype, write_hf_assets, write_mcore_tensors


def write_nemo(src, out: Path, final: Path, opts: Options, tp: int, pp: int) -> Tuple[int, int, float, list]:
    """The extracted NeMo checkpoint of ``src`` for ``tp`` x ``pp`` in ``out`` (to be renamed to ``final``, the
    absolute path model_config.yaml names the tokenizer by); (tensors, bytes, seconds, notes)."""
    import yaml

    from megatron_octo.utils.io import atomic_write_text

    if opts.critic and src.tokenizer is None:
        raise ConvertError(
            f"--critic: {src.path} has no tokenizer files and NeMo-Aligner's critic server builds its "
            "tokenizer from the checkpoint: pass --tokenizer DIR (the policy's tokenizer)"
        )
    check_layout(src.cfg, tp, pp)
    cfg, plan, rows = _model(src, tp, opts.critic)
    dtype = output_dtype(opts, src, build_plan(src.cfg, tp))
    target = NemoTarget(tp, pp, PRECISIONS[dtype], transformer_engine=src.cfg.spec != "local")
    (out / WEIGHTS_DIR).mkdir()
    label = f"{src.kind} -> nemo" + (" critic" if opts.critic else "")
    tensors, nbytes, seconds = write_mcore_tensors(out / WEIGHTS_DIR, plan, rows, opts, label, prefix=NEMO_PREFIX)
    tok, notes = None, []
    if src.tokenizer is not None:
        (out / TOKENIZER_DIR).mkdir()
        hf_io.copy_tokenizer(src.tokenizer, out / TOKENIZER_DIR)
        readable_by_transformers4(out / TOKENIZER_DIR)
        tok = Path(final) / TOKENIZER_DIR
    else:
        notes.append(
            "no tokenizer files found: pass --tokenizer DIR to bundle them (NeMo needs model.tokenizer.type otherwise)"
        )
    write_hf_assets(_without_tokenizer(src), dtype, out / HF_ASSETS)
    conf = nemo_model_config(cfg, target, tok)
    if opts.critic:
        conf.update(critic_model_fields())
    atomic_write_text(out / CONFIG_YAML, yaml.safe_dump(conf, sort_keys=False))
    return tensors, nbytes, seconds, notes


def _model(src, tp: int, critic: bool):
    """(model config, weight plan, rows) of what is written: the policy as it is, or the critic made from it
    (``convert.critic``)."""
    if not critic:
        return src.cfg, build_plan(src.cfg, tp), src.rows
    cfg, plan = critic_plan(src.cfg, tp)
    return cfg, plan, CriticRows(src.rows, src.cfg, build_plan(src.cfg, tp))


def _without_tokenizer(src):
    """``src`` for ``hf_assets``: the tokenizer goes to ``tokenizer/`` once, not twice."""
    from dataclasses import replace

    return replace(src, tokenizer=None)

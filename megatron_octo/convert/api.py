"""The conversions: ``convert(src, dst, ...)`` opens the input through its reader (``sources``), hands it to the
target's writer (``writers.write_hf`` / ``writers.write_mcore`` / ``nemo.write_nemo``) under a staged output,
verifies if asked, and renames the result into place. Every (from, to) pair is the same three steps.

Each reader checks its whole input first (config, every tensor's presence and shape) and each writer the requested
layout, so bad input ends with one ConvertError line before anything is written.

The named functions (``hf_to_mcore``, ``mcore_to_hf``, ``mcore_to_mcore``, ``to_nemo``, ``nemo_to_hf``,
``nemo_to_mcore``) are ``convert`` with the formats filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from megatron_octo.config.choices import CONVERT_FORMATS
from megatron_octo.convert import megatron_lm, sources
from megatron_octo.convert.errors import ConvertError, VerifyError
from megatron_octo.convert.options import DEFAULT_MAX_SHARD, ConvertResult, Options, parse_size
from megatron_octo.utils.io import check_writable_dir

DEFAULT_DIVISIBLE_BY = sources.DEFAULT_DIVISIBLE_BY


def convert(
    src: str,
    dst: str,
    input_path,
    output_path,
    *,
    tp: int = 1,
    pp: int = 1,
    tokenizer_dir=None,
    max_shard_size: str = DEFAULT_MAX_SHARD,
    make_vocab_size_divisible_by: Optional[int] = None,
    **options,
) -> ConvertResult:
    """``octo convert --from SRC --to DST``: read ``input_path`` as ``src``, write ``output_path`` as ``dst``.

    ``tp`` x ``pp``: the layout of a Megatron-Core or NeMo output (it decides the vocabulary padding, with
    ``make_vocab_size_divisible_by``; None keeps the input's, 128 for HF). ``tokenizer_dir`` overrides the tokenizer
    found beside the input. ``options``: the fields of ``Options`` (None takes the default).
    """
    opts = Options(**{k: v for k, v in options.items() if v is not None})
    for name, fmt in (("--from", src), ("--to", dst)):
        if fmt not in CONVERT_FORMATS:
            raise ConvertError(f"{name} {fmt} is not a format: use {', '.join(CONVERT_FORMATS)}")
    if dst == "hf" and (tp, pp) != (1, 1):
        raise ConvertError(f"--tp {tp} --pp {pp} describe a Megatron-Core layout: they apply to --to mcore only")
    if opts.critic and dst != "nemo":
        raise ConvertError(f"--critic writes NeMo-Aligner's critic checkpoint: it needs --to nemo, not --to {dst}")
    if (src, dst) == ("hf", "hf"):
        raise ConvertError("--from hf --to hf is not a conversion: copy the directory")
    if dst == "hf":
        parse_size(max_shard_size)  # a bad --max-shard-size is refused before anything is read or written
    check_writable_dir(output_path, "--output")  # before a .nemo input is unpacked beside it
    output = Path(output_path).absolute()
    with sources.open_source(
        src, input_path, output.parent, tp=tp, divisible=make_vocab_size_divisible_by, tokenizer_dir=tokenizer_dir
    ) as source:
        return _write(source, dst, Path(input_path), output, opts, tp=tp, pp=pp, max_shard_size=max_shard_size)


def _write(
    source, dst: str, input_path: Path, output: Path, opts: Options, *, tp: int, pp: int, max_shard_size: str
) -> ConvertResult:
    from megatron_octo.convert import writers

    warnings: list = []
    with writers.staged_output(output, opts.overwrite, (input_path, source.path)) as tmp:
        if dst == "hf":
            tensors, nbytes, seconds, notes = writers.write_hf(source, tmp, opts, max_shard_size)
            written = tmp
        elif dst == "mcore":
            tensors, nbytes, seconds, notes = writers.write_mcore(source, tmp, opts, tp, pp)
            written = writers.mcore_checkpoint_dir(tmp)
            caveat = megatron_lm.loading_caveat(source.cfg)  # the output is a Megatron-LM save folder
            warnings += [caveat] if caveat else []
        else:
            from megatron_octo.convert.nemo import write_nemo

            tensors, nbytes, seconds, notes = write_nemo(source, tmp, output, opts, tp, pp)
            written = tmp
        result = ConvertResult(output, tensors, nbytes, seconds, notes=list(source.notes) + notes, warnings=warnings)
        if opts.verify:
            result.verify = _verified(source, dst, written, opts)
    return result


def _verified(source, dst: str, written: Path, opts: Options):
    """The verification result, or a VerifyError (which removes the staged output) when out of tolerance."""
    from megatron_octo.convert.verify import Side, prompt_ids, verify

    ids = prompt_ids(opts.prompt, source.tokenizer, source.cfg.vocab_size)
    result = verify(Side.of_source(source), Side(dst, written), ids, atol=opts.atol, kl_tol=opts.kl_tol)
    if not result.ok:
        raise VerifyError(f"{result.line()}; nothing was written")
    return result


def hf_to_mcore(
    input_dir,
    output_dir,
    *,
    tp: int = 1,
    pp: int = 1,
    make_vocab_size_divisible_by: int = DEFAULT_DIVISIBLE_BY,
    **options,
) -> ConvertResult:
    """A Hugging Face model directory -> a Megatron-Core checkpoint for ``tp`` x ``pp`` (see ``writers``), which
    ``octo train ... checkpoint.load=DIR`` and Megatron-LM's ``--load DIR`` read under any layout."""
    return convert(
        "hf",
        "mcore",
        input_dir,
        output_dir,
        tp=tp,
        pp=pp,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        **options,
    )


def mcore_to_hf(
    ckpt, output_dir, *, tokenizer_dir=None, max_shard_size: str = DEFAULT_MAX_SHARD, **options
) -> ConvertResult:
    """A Megatron-Core checkpoint (ours: a checkpoint, a run directory's newest, ``DIR:STEP``; or Megatron-LM's:
    a save folder, an iteration folder, ``DIR:STEP``) -> a Hugging Face model directory. Tokenizer files come from
    ``tokenizer_dir``, else the checkpoint's ``hf_assets``, else the one the run's recipe or Megatron-LM's args
    name; without any, the result says so in ``notes``."""
    return convert(
        "mcore", "hf", ckpt, output_dir, tokenizer_dir=tokenizer_dir, max_shard_size=max_shard_size, **options
    )


def mcore_to_mcore(
    ckpt, output_dir, *, tp: int = 1, pp: int = 1, make_vocab_size_divisible_by: Optional[int] = None, **options
) -> ConvertResult:
    """Reshard a Megatron-Core checkpoint (model or training; only the model is kept) for ``tp`` x ``pp``."""
    return convert(
        "mcore",
        "mcore",
        ckpt,
        output_dir,
        tp=tp,
        pp=pp,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        **options,
    )


def to_nemo(
    src_kind: str,
    input_path,
    output_dir,
    *,
    tp: int = 1,
    pp: int = 1,
    tokenizer_dir=None,
    make_vocab_size_divisible_by: Optional[int] = None,
    **options,
) -> ConvertResult:
    """An HF / Megatron-Core / NeMo input -> the extracted NeMo checkpoint directory for ``tp`` x ``pp``."""
    return convert(
        src_kind,
        "nemo",
        input_path,
        output_dir,
        tp=tp,
        pp=pp,
        tokenizer_dir=tokenizer_dir,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        **options,
    )


def nemo_to_hf(
    input_path, output_dir, *, tokenizer_dir=None, max_shard_size: str = DEFAULT_MAX_SHARD, **options
) -> ConvertResult:
    """A NeMo checkpoint (directory or .nemo file) -> a Hugging Face model directory."""
    return convert(
        "nemo", "hf", input_path, output_dir, tokenizer_dir=tokenizer_dir, max_shard_size=max_shard_size, **options
    )


def nemo_to_mcore(
    input_path, output_dir, *, tp: int = 1, pp: int = 1, make_vocab_size_divisible_by: Optional[int] = None, **options
) -> ConvertResult:
    """A NeMo checkpoint (directory or .nemo file) -> a Megatron-Core model checkpoint for ``tp`` x ``pp``."""
    return convert(
        "nemo",
        "mcore",
        input_path,
        output_dir,
        tp=tp,
        pp=pp,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        **options,
    )

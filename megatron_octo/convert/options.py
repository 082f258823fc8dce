"""What every conversion accepts besides its input and output, every tolerance and default, and what it returns.

The one place for the converter's defaults: the CLI, the Python API, the readers and writers and ``--verify`` all
take them from here. The formats (``--from`` / ``--to``) are ``config.choices.CONVERT_FORMATS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch

from megatron_octo.convert.errors import ConvertError
from megatron_octo.utils.dtypes import TORCH_DTYPES

DEFAULT_PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\nAnswer:"
)
"""The prompt ``--verify`` runs through both sides."""
DEFAULT_ATOL = 1e-2
"""``--verify``: largest allowed |logit difference| (bf16 outputs differ by ~1e-3; a mapping mistake by ~1)."""
DEFAULT_KL = 1e-5
"""``--verify``: largest allowed mean KL(reference || converted) of the next-token distributions."""
DEFAULT_BLOCK_BYTES = 64 << 20
"""Rows are read and written in blocks of at most this many bytes."""
DEFAULT_MAX_SHARD = "5GB"
"""Largest safetensors shard of an HF output (transformers' spelling and decimal units)."""
HF_ASSETS = "hf_assets"
"""Subdirectory of a converted Megatron-Core checkpoint keeping the HF config.json, generation_config.json and
tokenizer files, so that converting back restores them."""


@dataclass
class Options:
    """What every conversion accepts besides its input and output."""

    dtype: Optional[str] = None
    """``fp32`` / ``bf16`` / ``fp16`` for every output tensor; None keeps each tensor's dtype."""
    overwrite: bool = False
    """Replace an existing output (otherwise refused)."""
    verify: bool = False
    """Compare the logits of both sides before the output is renamed into place."""
    prompt: str = DEFAULT_PROMPT
    atol: float = DEFAULT_ATOL
    kl_tol: float = DEFAULT_KL
    block_bytes: int = DEFAULT_BLOCK_BYTES
    quiet: bool = False
    """No progress lines."""
    critic: bool = False
    """``--to nemo``: write NeMo-Aligner's PPO critic made from the policy (``convert.critic``), not the policy."""


@dataclass
class ConvertResult:
    output: Path
    tensors: int
    bytes: int
    seconds: float
    verify: Optional[Any] = None
    """The ``verify.VerifyResult`` when ``verify`` was asked for."""
    notes: List[str] = field(default_factory=list)
    """Things the caller should tell the user (e.g. no tokenizer files were found)."""
    warnings: List[str] = field(default_factory=list)
    """Things the caller must warn the user about (e.g. what Megatron-LM builds differently from an --to mcore
    output: ``megatron_lm.loading_caveat``)."""


def target_dtype(opts: Options, source: torch.dtype) -> torch.dtype:
    """The dtype an output tensor is written in: ``opts.dtype``, else the source tensor's."""
    if opts.dtype is None:
        return source
    if opts.dtype not in TORCH_DTYPES:
        raise ConvertError(f"--dtype {opts.dtype} is not one of: {', '.join(TORCH_DTYPES)}")
    return TORCH_DTYPES[opts.dtype]


def parse_size(text: str) -> int:
    """``5GB`` / ``500MB`` / ``200KB`` / ``1024`` -> bytes (decimal units, as transformers' max_shard_size)."""
    units = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    text = str(text).strip().upper()
    size = None
    for unit, scale in units.items():
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            size = int(float(text[: -len(unit)]) * scale)
            break
    if size is None and text.isdigit():
        size = int(text)
    if size is not None:
        if size < 1:
            raise ConvertError(f"--max-shard-size {text!r} must be at least 1 byte: use a size like 5GB")
        return size
    raise ConvertError(f"--max-shard-size {text!r} is not a size like 5GB, 500MB or 200KB")

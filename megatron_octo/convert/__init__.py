"""Checkpoint conversion between Hugging Face, Megatron-Core (ours and Megatron-LM's, any TP/PP) and NeMo.

    from megatron_octo.convert import convert, hf_to_mcore, mcore_to_hf, mcore_to_mcore

    hf_to_mcore("Llama-3.2-3B", "ckpt/llama-3b", tp=2, pp=2)            # octo train ... checkpoint.load=ckpt/llama-3b
    mcore_to_hf("runs/decay-long", "hf/decay-long", tokenizer_dir="tok") # newest checkpoint of a run
    mcore_to_hf("megatron-lm/save", "hf/mlm")                           # a Megatron-LM save folder (its tracker)
    convert("hf", "nemo", "Llama-3.2-3B", "nemo/llama-3b", tp=2)        # NeMo-Aligner

Every function takes ``overwrite``, ``verify`` (compare logits of both sides; VerifyError above tolerance, nothing
written), ``dtype`` (fp32 / bf16 / fp16), ``quiet`` and returns a ``ConvertResult``.

Modules, lowest first (no module imports one above it):
``errors``, ``options`` (options, tolerances, defaults, result), ``progress``; ``layout`` (the weight plan and row
maps from the family rule tables); format I/O: ``hf_io`` (safetensors), ``dist_io`` (torch_dist), ``legacy_io``
(Megatron-LM's legacy torch format), ``zarr_io`` (older Megatron-Core zarr), ``megatron_lm`` (Megatron-LM's save
folders and args), ``nemo_format`` (NeMo's layout and model_config.yaml); ``sources`` (readers: every input as the
same rows); ``writers`` (HF and Megatron-Core targets) and ``nemo`` (the NeMo writer); ``verify`` / ``logits``
(logits comparison; ``python -m megatron_octo.convert.logits`` under torchrun evaluates a checkpoint under any
layout); ``api`` (``convert`` dispatching over (from, to)).
"""

from megatron_octo.convert.api import (
    convert,
    hf_to_mcore,
    mcore_to_hf,
    mcore_to_mcore,
    nemo_to_hf,
    nemo_to_mcore,
    to_nemo,
)
from megatron_octo.convert.errors import ConvertError, VerifyError
from megatron_octo.convert.options import ConvertResult

__all__ = [
    "convert",
    "hf_to_mcore",
    "mcore_to_hf",
    "mcore_to_mcore",
    "to_nemo",
    "nemo_to_hf",
    "nemo_to_mcore",
    "ConvertResult",
    "ConvertError",
    "VerifyError",
]

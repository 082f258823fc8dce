"""Checkpoint conversion: Hugging Face <-> Megatron-Core (torch_dist) at any TP/PP, streaming, verified.

    from megatron_octo.convert import hf_to_mcore, mcore_to_hf, mcore_to_mcore

    hf_to_mcore("Llama-3.2-3B", "ckpt/llama-3b", tp=2, pp=2)            # octo train ... checkpoint.load=ckpt/llama-3b
    mcore_to_hf("runs/decay-long", "hf/decay-long", tokenizer_dir="tok") # newest checkpoint of a run
    mcore_to_mcore("ckpt/llama-3b", "ckpt/llama-3b-tp1", tp=1, pp=1)

Every function takes ``overwrite``, ``verify`` (compare logits of both sides; VerifyError above tolerance, nothing
written), ``dtype`` (fp32 / bf16 / fp16), ``quiet`` and returns a ``ConvertResult``. Modules: ``layout`` (the weight
plan and row maps derived from the family rule tables), ``hf_io`` (lazy safetensors reads, streaming shard writes),
``dist_io`` (torch_dist writes and reads without building a model), ``convert`` (row sources, staged outputs),
``api`` (the conversions), ``verify`` and ``logits`` (logits comparison; ``python -m megatron_octo.convert.logits``
under torchrun evaluates a checkpoint under any layout).
"""

from megatron_octo.convert.api import convert, hf_to_mcore, mcore_to_hf, mcore_to_mcore
from megatron_octo.convert.errors import ConvertError, VerifyError
from megatron_octo.convert.streaming import ConvertResult

__all__ = ["convert", "hf_to_mcore", "mcore_to_hf", "mcore_to_mcore", "ConvertResult", "ConvertError", "VerifyError"]

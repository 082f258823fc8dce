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
from typing import Any, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.options import DEFAULT_ATOL, DEFAULT_KL

_RANDOM_PROMPT_LEN = 32


@dataclass
class Side:
    """One side of a comparison: a format and where it is stored."""

    kind: str
    """``hf`` / ``mcore`` / ``nemo``."""
    path: Path
    cfg: Optional[object] = None
    """The ModelConfig to load an ``mcore`` side with where it carries no metadata of ours (Megatron-LM's)."""
    rows: Optional[object] = None
    """For a source no loader of its own reads (a legacy or zarr Megatron-LM checkpoint): its row source, written
    to a scratch torch_dist checkpoint and loaded from there."""

    @classmethod
    def of_source(cls, src) -> "Side":
        """The reference side of a conversion's ``sources.Source``."""
        return cls(src.kind, src.path, cfg=src.verify_cfg, rows=None if src.native else src.rows)


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
        return (
            f"verify ({self.sides}, {self.tokens} tokens): max |logit diff| = {self.max_abs_diff:.3g} "
            f"(tolerance {self.atol:g}), KL = {self.kl:.3g} (tolerance {self.kl_tol:g}): {verdict}"
        )


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

    # with output_loading_info=True transformers returns (model, info), which its annotation does not say
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, output_loading_info=True)
    model, info = loaded
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
        raise ConvertError(
            "--verify runs Megatron-Core in a world of one process and cannot run in a process that "
            "already joined a torch.distributed job: run the conversion from a fresh process"
        )
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
            logits = forward_logits(gpt, tcfg, cfg, ids, ctx)
            assert logits is not None  # a world of one is its own last pipeline stage
            return logits


def compare(reference: torch.Tensor, converted: torch.Tensor) -> Tuple[float, float]:
    """(max |difference|, mean over positions of KL(reference || converted)) of two logits tensors [b, s, v]."""
    if reference.shape != converted.shape:
        raise ConvertError(f"logits shapes differ: {tuple(reference.shape)} vs {tuple(converted.shape)}")
    log_p = F.log_softmax(reference.double(), dim=-1)
    log_q = F.log_softmax(converted.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return float((reference - converted).abs().max()), float(kl.clamp_min(0.0))


def nemo_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits [b, s, vocab] of an extracted NeMo checkpoint, through Megatron-Core in one process (the
    ``model.`` prefix is found from the stored keys)."""
    from megatron_octo.convert.nemo_format import WEIGHTS_DIR, open_nemo

    ckpt, _ = open_nemo(Path(path))
    return mcore_logits(ckpt.path / WEIGHTS_DIR, ids, cfg=ckpt.cfg)


def rows_logits(cfg, rows, ids: torch.Tensor, scratch: Optional[Path] = None) -> torch.Tensor:
    """fp32 logits of the model a row source serves, written to a scratch torch_dist checkpoint under ``scratch``
    (the system's temporary directory by default; removed afterwards) and loaded from there."""
    import shutil
    import tempfile

    from megatron_octo.convert.layout import build_plan
    from megatron_octo.convert.options import Options
    from megatron_octo.convert.writers import write_mcore_tensors

    tmp = Path(tempfile.mkdtemp(prefix="octo-verify-", dir=scratch))
    try:
        write_mcore_tensors(tmp, build_plan(cfg), rows, Options(quiet=True), "verify")
        return mcore_logits(tmp, ids, cfg=cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def logits_of(side: Side, ids: torch.Tensor) -> torch.Tensor:
    """Logits of one side."""
    if side.rows is not None:
        return rows_logits(side.cfg, side.rows, ids, None)
    if side.kind == "nemo":
        return nemo_logits(side.path, ids)
    return hf_logits(side.path, ids) if side.kind == "hf" else mcore_logits(side.path, ids, cfg=side.cfg)


def verify(
    reference: Side, converted: Side, ids: torch.Tensor, *, atol: float = DEFAULT_ATOL, kl_tol: float = DEFAULT_KL
) -> VerifyResult:
    """Compare the logits of ``reference`` and ``converted`` on ``ids``."""
    ref = logits_of(reference, ids)
    out = logits_of(converted, ids)
    diff, kl = compare(ref, out)
    return VerifyResult(diff, kl, int(ids.numel()), atol, kl_tol, f"{reference.kind} vs {converted.kind}")

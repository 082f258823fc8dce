"""Fixtures for the model-family tests: a one-process Megatron-Core world, and HF-vs-Megatron logits."""

from __future__ import annotations

import dataclasses
import os
import warnings

import pytest
import torch

from megatron_octo.config.schema import ModelConfig, ParallelConfig


@pytest.fixture(scope="module")
def mcore_world():
    """torch.distributed (gloo, world of one) + Megatron-Core model-parallel state, torn down after the module."""
    from megatron_octo import parallel
    from megatron_octo.parallel import cpu_compat

    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    # initialize() writes RANK / WORLD_SIZE / MASTER_PORT into os.environ for a world of one; restore them so
    # that processes launched by later tests do not inherit this world (and its still-bound port).
    saved_env = dict(os.environ)
    ctx = parallel.initialize(ParallelConfig(), seed=1234)
    yield ctx
    parallel.destroy(ctx)
    cpu_compat.disable()
    os.environ.clear()
    os.environ.update(saved_env)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values of unit-scale effect, so that each mapping error shows in the logits
    (HF initializes norms to one and biases to zero, which would hide swapped norms or dropped biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.2 * noise)
            else:
                p.copy_(noise / p.shape[1] ** 0.5)
    return model


def random_hf_model(family, cfg: ModelConfig, seed: int = 0):
    """A random fp32 ``*ForCausalLM`` built from the family's ``to_hf(cfg)`` through the real HF config class."""
    import transformers

    hf_config = transformers.AutoConfig.for_model(**family.to_hf(cfg))
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager")
    return randomize_(model.float().eval(), seed)


@dataclasses.dataclass
class Comparison:
    hf_logits: torch.Tensor  # [b, s, v]
    mcore_logits: torch.Tensor  # [b, s, v] (padding rows dropped)
    mcore: torch.nn.Module
    hf: torch.nn.Module

    @property
    def max_diff(self) -> float:
        return (self.hf_logits - self.mcore_logits).abs().max().item()


@pytest.fixture(scope="module")
def compare_logits(mcore_world):
    """``compare_logits(family, cfg, mcore_cfg=None, sdpa=True)``: a random HF model, converted with
    ``state_dict_from_hf`` into a local-spec GPTModel built from ``mcore_cfg`` (default ``cfg``), both run on
    one random batch."""
    from megatron_octo.models import gpt as mgpt

    def run(family, cfg: ModelConfig, mcore_cfg: ModelConfig = None, sdpa: bool = True, seq: int = 96):
        mcore_cfg = mcore_cfg or cfg
        hf = random_hf_model(family, cfg)
        tcfg = mgpt.transformer_config(mcore_cfg, ParallelConfig(), torch.float32)
        gpt = mgpt.build_gpt_model(
            mcore_cfg, tcfg, mcore_world.pgs, pre_process=True, post_process=True, use_te=False, sdpa=sdpa
        ).eval()
        result = gpt.load_state_dict(family.state_dict_from_hf(hf.state_dict(), cfg, use_te=False), strict=False)
        assert not result.unexpected_keys
        assert all(k.endswith("_extra_state") for k in result.missing_keys), result.missing_keys
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(0, cfg.vocab_size, (2, seq), generator=gen)
        positions = torch.arange(seq).unsqueeze(0).expand(2, -1)
        with torch.no_grad():
            hf_logits = hf(ids).logits
            mcore_logits = gpt(ids, positions, None)[..., : cfg.vocab_size]  # attention_mask None: causal
        return Comparison(hf_logits, mcore_logits, gpt, hf)

    return run

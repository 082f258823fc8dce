"""The model-family contract: what a family declares, as one typed value.

A family (``llama``, ``qwen2``) is declarative: the ``config.json`` identity of its architecture, its presets (exact
HF configs), its config mapping (``from_hf`` / ``to_hf``) and its per-layer weight rules. Everything that turns
those into Megatron-Core objects lives in ``models.gpt`` (shared by every Llama-like family), and everything that
moves tensors lives in ``models.weight_map``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Protocol, Sequence

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import weight_map
from megatron_octo.models.weight_map import Rule


class FromHF(Protocol):
    def __call__(self, hf_config: Mapping, *, name_preset: bool = True) -> ModelConfig: ...


class ToHF(Protocol):
    def __call__(self, cfg: ModelConfig, *, dtype: Optional[str] = None) -> dict: ...


@dataclass(frozen=True)
class Family:
    """One model family. ``name`` is ``ModelConfig.family``; the registry (``models.FAMILIES``) is keyed by it."""

    name: str
    """``ModelConfig.family`` value (``llama``)."""
    model_type: str
    """``config.json`` ``model_type`` this family reads and writes."""
    architecture: str
    """``config.json`` ``architectures[0]`` (``LlamaForCausalLM``)."""
    presets: Mapping[str, dict]
    """Preset name -> exact HF ``config.json`` dict (a fresh copy per lookup, see ``hf_config.Presets``)."""
    layer_rules: Sequence[Rule]
    """Per-layer weight rules (``weight_map.LAYER_RULES``, plus ``QKV_BIAS_RULE`` where the family has QKV biases)."""
    from_hf: FromHF
    """``config.json`` dict -> ModelConfig; one-line ValueError on what the family cannot represent."""
    to_hf: ToHF
    """ModelConfig -> full ``config.json`` dict."""

    def state_dict_to_hf(self, mcore_sd: Mapping[str, torch.Tensor], cfg: ModelConfig) -> Dict[str, torch.Tensor]:
        """Full Megatron-Core state dict -> HF state dict (see ``weight_map.state_dict_to_hf``)."""
        return weight_map.state_dict_to_hf(mcore_sd, cfg, self.layer_rules)

    def state_dict_from_hf(
        self, hf_sd: Mapping[str, torch.Tensor], cfg: ModelConfig, use_te: bool, tp: int = 1
    ) -> Dict[str, torch.Tensor]:
        """HF state dict -> full Megatron-Core state dict (see ``weight_map.state_dict_from_hf``)."""
        return weight_map.state_dict_from_hf(hf_sd, cfg, self.layer_rules, use_te, tp)

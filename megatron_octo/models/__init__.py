"""Model families and their registry.

Each family module (``llama``, ``qwen2``) declares one ``models.family.Family``: presets (config.json dicts),
``from_hf`` / ``to_hf`` (config.json <-> ModelConfig) and its per-layer weight rules, with ``state_dict_to_hf`` /
``state_dict_from_hf`` over full tensors. The shared parts live beside them: ``hf_config`` (config.json fields),
``gpt`` (TransformerConfig, layer spec, GPTModel), ``weight_map`` (named transforms and rule tables), ``shapes``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping

from megatron_octo.models import llama, qwen2
from megatron_octo.models.family import Family

FAMILIES: Dict[str, Family] = {f.name: f for f in (llama.FAMILY, qwen2.FAMILY)}

# ModelConfig fields a preset does not decide: they are the recipe's choice.
_NOT_FROM_PRESET = ("make_vocab_size_divisible_by", "spec")


def get_family(name: str) -> Family:
    """The family called ``name``; one-line ValueError listing the known families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}: known families are {', '.join(sorted(FAMILIES))}") from None


def preset(name: str) -> dict:
    """ModelConfig fields (family, preset and the architecture) of the preset ``name``, searching every family.

    ``make_vocab_size_divisible_by`` and ``spec`` are left out: a recipe sets them. Unknown names raise a one-line
    ValueError listing the known presets.
    """
    for family in FAMILIES.values():
        if name in family.presets:
            fields = dataclasses.asdict(family.from_hf(family.presets[name], name_preset=False))
            fields["preset"] = name
            return {k: v for k, v in fields.items() if k not in _NOT_FROM_PRESET}
    known = sorted(p for family in FAMILIES.values() for p in family.presets)
    raise ValueError(f"unknown model preset {name!r}: known presets are {', '.join(known)}")


def family_for_hf_config(hf_config: Mapping) -> Family:
    """The family that reads this config.json, chosen by its ``model_type``."""
    model_type = hf_config.get("model_type")
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    known = ", ".join(sorted(f.model_type for f in FAMILIES.values()))
    raise ValueError(f"config.json model_type {model_type!r} is not supported: known model types are {known}")

"""Model families: one module each (``llama``, ``qwen2``) with presets, HF config mapping, layer spec, weight map.

Each family module exposes ``PRESETS`` (config.json dicts), ``from_hf`` / ``to_hf`` (config.json <-> ModelConfig),
``layer_spec``, and ``state_dict_to_hf`` / ``state_dict_from_hf`` (full tensors).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Dict, Mapping

from megatron_octo.models import llama, qwen2

FAMILIES: Dict[str, ModuleType] = {"llama": llama, "qwen2": qwen2}

# ModelConfig fields a preset does not decide: they are the recipe's choice.
_NOT_FROM_PRESET = ("make_vocab_size_divisible_by", "spec")


def get_family(name: str) -> ModuleType:
    """The family module called ``name``; one-line ValueError listing the known families otherwise."""
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
        if name in family.PRESETS:
            fields = dataclasses.asdict(family.from_hf(family.PRESETS[name], name_preset=False))
            fields["preset"] = name
            return {k: v for k, v in fields.items() if k not in _NOT_FROM_PRESET}
    known = sorted(p for family in FAMILIES.values() for p in family.PRESETS)
    raise ValueError(f"unknown model preset {name!r}: known presets are {', '.join(known)}")


def family_for_hf_config(hf_config: Mapping) -> ModuleType:
    """The family module that reads this config.json, chosen by its ``model_type``."""
    model_type = hf_config.get("model_type")
    for family in FAMILIES.values():
        if family.MODEL_TYPE == model_type:
            return family
    known = ", ".join(sorted(f.MODEL_TYPE for f in FAMILIES.values()))
    raise ValueError(f"config.json model_type {model_type!r} is not supported: known model types are {known}")

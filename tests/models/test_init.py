"""The family registry: lookup by name, preset and config.json model_type."""

from __future__ import annotations

import pytest

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import FAMILIES, family_for_hf_config, get_family, llama, preset, qwen2
from megatron_octo.models.family import Family


def test_get_family():
    assert get_family("llama") is llama.FAMILY and get_family("qwen2") is qwen2.FAMILY
    with pytest.raises(ValueError, match="unknown model family 'gpt2': known families are llama, qwen2"):
        get_family("gpt2")


def test_every_family_is_a_family_value_under_its_name():
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name
    assert (llama.FAMILY.model_type, llama.FAMILY.architecture) == ("llama", "LlamaForCausalLM")
    assert (qwen2.FAMILY.model_type, qwen2.FAMILY.architecture) == ("qwen2", "Qwen2ForCausalLM")
    assert len(qwen2.FAMILY.layer_rules) == len(llama.FAMILY.layer_rules) + 1  # the QKV bias


@pytest.mark.parametrize(
    "name, family",
    [("llama-3.2-1b", "llama"), ("llama-3.2-3b", "llama"), ("llama-3.1-8b", "llama"), ("tiny-llama", "llama"),
     ("tiny-llama-untied", "llama"), ("qwen2.5-1.5b", "qwen2"), ("qwen2.5-3b", "qwen2"), ("qwen2.5-7b", "qwen2"),
     ("tiny-qwen2", "qwen2")],
)
def test_preset_gives_model_config_fields(name, family):
    fields = preset(name)
    assert fields["family"] == family and fields["preset"] == name
    assert "spec" not in fields and "make_vocab_size_divisible_by" not in fields  # the recipe's choice
    cfg = ModelConfig(**fields)
    assert get_family(family).from_hf(get_family(family).to_hf(cfg)) == cfg


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'llama-2-7b': known presets are llama-3.1-8b, .*qwen2"):
        preset("llama-2-7b")


def test_family_for_hf_config():
    assert family_for_hf_config({"model_type": "llama"}) is llama.FAMILY
    assert family_for_hf_config(qwen2.PRESETS["qwen2.5-3b"]) is qwen2.FAMILY
    with pytest.raises(ValueError, match="model_type 'mistral' is not supported: known model types are llama, qwen2"):
        family_for_hf_config({"model_type": "mistral"})

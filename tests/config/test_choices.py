"""Each set of allowed values lives in config.choices; validation and the code that dispatches use the same set."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron_octo.config import ConfigError, load_recipe
from megatron_octo.config.choices import CHOICES, KL_ESTIMATORS, LOSS_AGGREGATIONS, RL_CHOICES
from megatron_octo.config.schema import RecipeConfig
from megatron_octo.config.validate import validate, validate_rl
from megatron_octo.rl import algorithms


def _replace(recipe: RecipeConfig, dotted: str, value) -> RecipeConfig:
    """``recipe`` with the field at ``dotted`` (any depth) set to ``value``."""
    head, _, rest = dotted.partition(".")
    inner = getattr(recipe, head)
    return dataclasses.replace(recipe, **{head: _replace(inner, rest, value) if rest else value})


@pytest.mark.parametrize("dotted", sorted(CHOICES))
def test_every_training_choice_is_checked(dotted):
    recipe = load_recipe("tiny-cpu")
    with pytest.raises(ConfigError, match=f"{dotted}='bogus' is not one of: "):
        validate(_replace(recipe, dotted, "bogus"))


@pytest.mark.parametrize("dotted", sorted(RL_CHOICES))
def test_every_rl_choice_is_checked(dotted):
    recipe = load_recipe("tiny-cpu-grpo", ["rl.init=x"])
    with pytest.raises(ConfigError, match=f"{dotted}='bogus' is not one of: {', '.join(RL_CHOICES[dotted])}"):
        validate_rl(_replace(recipe, dotted, "bogus"))


def test_family_choices_are_the_registry():
    with pytest.raises(ConfigError, match="model.family='gpt2' is not one of: llama, qwen2"):
        validate(_replace(load_recipe("tiny-cpu"), "model.family", "gpt2"))


def test_the_algorithms_accept_exactly_the_configured_sets():
    logp, ref, mask = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]), torch.ones(1, 2)
    for kind in KL_ESTIMATORS:
        assert torch.isfinite(algorithms.kl_estimate(logp, ref, kind)).all()
    for mode in LOSS_AGGREGATIONS:
        assert torch.isfinite(algorithms.aggregate(logp, mask, mode))
    with pytest.raises(ValueError, match="choose from low_var_kl, k1, abs, mse"):
        algorithms.kl_estimate(logp, ref, "bogus")
    with pytest.raises(ValueError, match="choose from token-mean, seq-mean-token-mean, seq-mean-token-sum"):
        algorithms.aggregate(logp, mask, "bogus")

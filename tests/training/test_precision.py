"""Precision: FP8 options validate, and FP8 is refused where Transformer Engine or FP8 hardware is missing."""

import pytest
import torch

from megatron_octo.config import ConfigError, load_recipe
from megatron_octo.training.build import SetupError, _check_precision, resolve_dtype


def test_dtype_auto_is_fp32_on_cpu_and_bf16_on_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16


def test_fp8_recipes_and_bf16_end_layers_validate():
    recipe = load_recipe("octothinker-3b-stable", ["precision.fp8=hybrid", "precision.fp8_bf16_layers=1"])
    assert (recipe.precision.fp8_recipe, recipe.precision.fp8_bf16_layers) == ("tensorwise", 1)
    with pytest.raises(ConfigError, match="delayed scaling cannot keep layers in bf16"):
        load_recipe("octothinker-3b-stable", ["precision.fp8=hybrid", "precision.fp8_recipe=delayed",
                                              "precision.fp8_bf16_layers=1"])
    with pytest.raises(ConfigError, match="precision.fp8_recipe='fp4'"):
        load_recipe("octothinker-3b-stable", ["precision.fp8_recipe=fp4"])
    with pytest.raises(ConfigError, match="needs precision.dtype=bf16"):
        load_recipe("tiny-cpu", ["precision.fp8=e4m3", "precision.dtype=fp32"])
    # 28 layers on 4 pipeline stages: 7 a stage, so at most 7 bf16 layers at each end.
    with pytest.raises(ConfigError, match="exceeds the 7 layers"):
        load_recipe("octothinker-3b-stable", ["precision.fp8=hybrid", "precision.fp8_bf16_layers=8",
                                              "parallel.pp=4"])


def test_fp8_is_refused_without_transformer_engine_or_fp8_hardware():
    recipe = load_recipe("tiny-cpu", ["precision.fp8=hybrid", "precision.dtype=bf16"])
    with pytest.raises(SetupError, match="needs Transformer Engine"):
        _check_precision(recipe, use_te=False, device=torch.device("cpu"))
    with pytest.raises(SetupError, match="Hopper or newer"):
        _check_precision(recipe, use_te=True, device=torch.device("cpu"))
    _check_precision(load_recipe("tiny-cpu"), use_te=False, device=torch.device("cpu"))  # no FP8: nothing to check

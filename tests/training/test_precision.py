"""Precision: what ``precision.fp8`` resolves to per GPU (described, not detected), the Megatron-Core fields each
choice produces, and the refusals. The expected choices are Megatron-Bridge's presets (current scaling on Hopper:
hybrid, tensorwise, first/last layer BF16, FP8 parameters; MXFP8 on Blackwell: e4m3, FP8 parameters, the gradient
buffer reused for their all-gather)."""

import pytest
import torch

from megatron_octo.config import ConfigError, load_recipe
from megatron_octo.training.build import resolve_dtype
from megatron_octo.training.precision import Hardware, PrecisionError, detect_hardware, resolve_fp8

CPU = Hardware()
H100 = Hardware("cuda", "NVIDIA H100 80GB HBM3", (9, 0), te_version="2.8.0", te_cross_entropy=True)
H100_OLD_TE = Hardware("cuda", "NVIDIA H100 80GB HBM3", (9, 0), te_version="2.1.0")
L40S = Hardware("cuda", "NVIDIA L40S", (8, 9), te_version="2.8.0")
B200 = Hardware("cuda", "NVIDIA B200", (10, 0), te_version="2.8.0", te_cross_entropy=True)
A100 = Hardware("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), te_version="2.8.0", te_cross_entropy=True)
H100_NO_TE = Hardware("cuda", "NVIDIA H100 80GB HBM3", (9, 0))


def plan(recipe_name, overrides=(), hw=H100):
    recipe = load_recipe(recipe_name, list(overrides))
    return resolve_fp8(recipe.precision, recipe.parallel, hw)


def test_dtype_auto_is_fp32_on_cpu_and_bf16_on_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16


@pytest.mark.parametrize("name", ["octothinker-1b-stable", "octothinker-3b-stable", "octothinker-8b-stable",
                                  "octothinker-1b-decay-long", "octothinker-3b-decay-hybrid",
                                  "octothinker-8b-decay-short"])
def test_octothinker_recipes_ask_for_fp8_auto(name):
    assert load_recipe(name).precision.fp8 == "auto"


@pytest.mark.parametrize("name", ["tiny-cpu", "tiny-cpu-qwen2", "tiny-cpu-stable", "tiny-cpu-grpo"])
def test_tiny_recipes_have_no_fp8(name):
    recipe = load_recipe(name)
    assert recipe.precision.fp8 is None
    assert not resolve_fp8(recipe.precision, recipe.parallel, H100).enabled


def test_hopper_gets_current_scaling_with_bf16_end_layers_and_fp8_params():
    p = plan("octothinker-3b-stable")
    assert (p.fmt, p.recipe, p.bf16_layers, p.param_gather) == ("hybrid", "tensorwise", 1, True)
    assert p.transformer_config() == dict(
        fp8="hybrid", fp8_recipe="tensorwise", fp8_param=True, first_last_layers_bf16=True,
        num_layers_at_start_in_bf16=1, num_layers_at_end_in_bf16=1)
    assert p.ddp_config() == dict(fp8_param_gather=True, reuse_grad_buf_for_mxfp8_param_ag=False)
    assert p.optimizer_config() == dict(fp8_recipe="tensorwise", reuse_grad_buf_for_mxfp8_param_ag=False)
    assert len(p.notes) == 1 and "H100" in p.notes[0] and "tensorwise" in p.notes[0]


def test_ada_gets_the_hopper_choice():
    assert (plan("octothinker-1b-stable", hw=L40S).recipe, plan("octothinker-1b-stable", hw=L40S).fmt) == \
        ("tensorwise", "hybrid")


def test_blackwell_gets_mxfp8_and_reuses_the_grad_buffer():
    p = plan("octothinker-8b-stable", hw=B200)
    assert (p.fmt, p.recipe, p.bf16_layers, p.param_gather) == ("e4m3", "mxfp8", 0, True)
    assert p.transformer_config()["first_last_layers_bf16"] is False
    assert p.ddp_config() == dict(fp8_param_gather=True, reuse_grad_buf_for_mxfp8_param_ag=True)
    assert p.optimizer_config()["reuse_grad_buf_for_mxfp8_param_ag"] is True


def test_old_transformer_engine_falls_back_to_delayed_scaling_without_bf16_layers():
    p = plan("octothinker-3b-stable", hw=H100_OLD_TE)
    assert (p.recipe, p.bf16_layers) == ("delayed", 0)


@pytest.mark.parametrize("hw,why", [(A100, "no FP8 tensor cores"), (H100_NO_TE, "Transformer Engine"),
                                    (CPU, "no CUDA GPU")])
def test_auto_without_fp8_hardware_trains_bf16_and_says_so_in_one_line(hw, why):
    p = plan("octothinker-3b-stable", hw=hw)
    assert not p.enabled and p.transformer_config()["fp8"] is None
    assert p.transformer_config()["fp8_param"] is False and p.ddp_config()["fp8_param_gather"] is False
    assert len(p.notes) == 1 and why in p.notes[0] and "\n" not in p.notes[0]


def test_null_forces_bf16_on_hopper_without_a_word():
    p = plan("octothinker-3b-stable", ["precision.fp8=null"])
    assert not p.enabled and p.notes == ()


def test_auto_with_an_fp32_recipe_is_off_not_refused():
    p = plan("octothinker-3b-stable", ["precision.dtype=fp32"])
    assert not p.enabled and "precision.dtype=fp32" in p.notes[0]


def test_param_gather_follows_the_distributed_optimizer_unless_set():
    assert not plan("octothinker-3b-stable", ["parallel.distributed_optimizer=false",
                                              "parallel.overlap_param_gather=false"]).param_gather
    assert not plan("octothinker-3b-stable", ["precision.fp8_param_gather=false"]).param_gather


def test_explicit_choices_are_kept():
    p = plan("octothinker-3b-stable", ["precision.fp8=e4m3", "precision.fp8_recipe=delayed"])
    assert (p.fmt, p.recipe, p.bf16_layers, p.notes) == ("e4m3", "delayed", 0, ())
    p = plan("octothinker-3b-stable", ["precision.fp8_bf16_layers=2"])
    assert p.transformer_config()["num_layers_at_start_in_bf16"] == 2


@pytest.mark.parametrize("overrides,hw,match", [
    (["precision.fp8=hybrid"], A100, "no FP8 tensor cores"),
    (["precision.fp8=hybrid"], H100_NO_TE, "Transformer Engine cannot be imported"),
    (["precision.fp8=hybrid"], CPU, "no CUDA GPU"),
    (["precision.fp8_recipe=mxfp8"], H100, "needs a Blackwell GPU"),
    (["precision.fp8_recipe=blockwise"], B200, "Hopper only"),
    (["precision.fp8_recipe=tensorwise"], H100_OLD_TE, "Transformer Engine >= 2.2"),
])
def test_impossible_demands_are_refused_in_one_line(overrides, hw, match):
    with pytest.raises(PrecisionError, match=match) as info:
        plan("octothinker-3b-stable", overrides, hw=hw)
    assert "\n" not in str(info.value)


def test_config_validation_of_fp8_fields():
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


def test_cpu_hardware_is_detected_without_importing_transformer_engine():
    import sys

    hw = detect_hardware(torch.device("cpu"))
    assert hw == Hardware() and not hw.cuda and not hw.te
    assert "transformer_engine" not in sys.modules


def test_te_version_comparison_reads_dev_builds():
    assert Hardware("cuda", te_version="2.2.0.dev0+5fdd7bb").te_at_least("2.2")
    assert not Hardware("cuda", te_version="2.1.9").te_at_least("2.2")
    assert not Hardware("cuda").te_at_least("1.0")


class _FakeFloat8(torch.Tensor):
    """Stands in for TE's Float8Tensor, which cannot be imported on a machine without CUDA."""


def _fake_te_fp8(monkeypatch):
    from megatron.core import fp8_utils

    monkeypatch.setattr(fp8_utils, "is_float8tensor", lambda t: isinstance(t, _FakeFloat8))
    monkeypatch.setattr(fp8_utils, "dequantize_fp8_tensor",
                        lambda t: t.as_subclass(torch.Tensor).to(torch.bfloat16).clone())


def test_fp8_weights_are_saved_dequantized_and_other_tensors_untouched(monkeypatch):
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    from megatron_octo.training.precision import dequantize_for_save

    _fake_te_fp8(monkeypatch)
    fp8 = torch.tensor([[1.5, -2.0], [0.25, 4.0]]).as_subclass(_FakeFloat8)
    plain = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    sd = {"decoder.layers.0.mlp.linear_fc1.weight": ShardedTensor.from_rank_offsets("fc1", fp8),
          "decoder.final_layernorm.weight": ShardedTensor.from_rank_offsets("norm", plain)}
    dequantize_for_save(sd)
    saved = sd["decoder.layers.0.mlp.linear_fc1.weight"].data
    assert type(saved) is torch.Tensor and saved.dtype == torch.bfloat16
    assert torch.equal(saved, torch.tensor([[1.5, -2.0], [0.25, 4.0]], dtype=torch.bfloat16))
    assert sd["decoder.final_layernorm.weight"].data is plain


def test_a_save_dequantizes_after_the_optimizer_state_is_mapped(monkeypatch):
    """The distributed optimizer maps its shards to the model's ShardedTensors first; only then may their data be
    replaced by dequantized copies (a load never dequantizes: it fills the model's own tensors)."""
    from megatron_octo.training import checkpoint, precision

    calls = []

    class Chunk(torch.nn.Module):
        def sharded_state_dict(self):
            return {"w": "sharded"}

    class Optimizer:
        def sharded_state_dict(self, model_sd, is_loading, metadata):
            calls.append("optimizer")
            return {}

    class Parts:
        model = [Chunk()]
        optimizer = Optimizer()

    monkeypatch.setattr(precision, "dequantize_for_save", lambda sd: calls.append("dequantize"))
    checkpoint.sharded_state(Parts(), with_optimizer=True, is_loading=False)
    assert calls == ["optimizer", "dequantize"]
    calls.clear()
    checkpoint.sharded_state(Parts(), with_optimizer=True, is_loading=True)
    assert calls == ["optimizer"]

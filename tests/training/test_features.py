"""The ``perf`` keys resolved per machine (described GPUs): the TransformerConfig / DDP fields they produce, what
``null`` turns on (Megatron-Bridge's H100 choices), and the one-line refusals of impossible demands."""

import pytest

from megatron_octo.config import ConfigError, load_recipe
from megatron_octo.training.features import FeatureError, recompute_fields, resolve_features
from megatron_octo.training.precision import Hardware

CPU = Hardware()
H100 = Hardware("cuda", "NVIDIA H100 80GB HBM3", (9, 0), te_version="2.8.0", te_cross_entropy=True)
H100_NO_TE = Hardware("cuda", "NVIDIA H100 80GB HBM3", (9, 0))


def features(name, overrides=(), hw=H100, use_te=True):
    return resolve_features(load_recipe(name, list(overrides)), hw, use_te)


def test_on_a_hopper_with_te_null_turns_everything_on():
    f = features("octothinker-8b-stable", ["parallel.tp=2", "parallel.sequence_parallel=true"])
    assert f.tcfg["tp_comm_overlap"] is True and f.tcfg["tp_comm_bootstrap_backend"] == "nccl"
    assert f.tcfg["gradient_accumulation_fusion"] is True
    assert (f.tcfg["cross_entropy_loss_fusion"], f.tcfg["cross_entropy_fusion_impl"]) == (True, "te")
    assert f.ddp == {"grad_reduce_in_fp32": True}
    assert f.notes == []
    # One micro-batch of 8,192 tokens x hidden 4,096 (Llama-3.1-8B), on CP rank 1 of 1.
    assert f.userbuffers_shape == (8192, 4096)


def test_userbuffers_shape_divides_by_context_parallelism():
    f = features("octothinker-8b-stable", ["parallel.tp=2", "parallel.sequence_parallel=true", "parallel.cp=2",
                                           "train.micro_batch=2"])
    assert f.userbuffers_shape == (8192 * 2 // 2, 4096)


def test_tp1_has_no_overlap_and_no_note():
    f = features("octothinker-3b-stable")
    assert f.tcfg["tp_comm_overlap"] is False and f.userbuffers_shape is None and f.notes == []


def test_cpu_turns_fused_features_off_silently_and_keeps_recompute():
    f = features("tiny-cpu", ["perf.recompute=selective"], hw=CPU, use_te=False)
    assert f.tcfg["tp_comm_overlap"] is False and f.tcfg["gradient_accumulation_fusion"] is False
    assert f.tcfg["cross_entropy_loss_fusion"] is False and f.tcfg["cross_entropy_fusion_impl"] == "native"
    assert f.tcfg["recompute_granularity"] == "selective" and f.tcfg["recompute_modules"] == ["core_attn"]
    assert f.notes == []


def test_gpu_without_te_turns_off_with_one_line_each():
    f = features("octothinker-8b-stable", ["parallel.tp=2", "parallel.sequence_parallel=true"], hw=H100_NO_TE,
                 use_te=False)
    assert not any(f.tcfg[k] for k in ("tp_comm_overlap", "gradient_accumulation_fusion", "cross_entropy_loss_fusion"))
    assert [n.split(":")[0] for n in f.notes] == ["perf.tp_comm_overlap", "perf.gradient_accumulation_fusion",
                                                  "perf.cross_entropy_fusion"]


def test_local_spec_with_apex_keeps_gradient_accumulation_fusion():
    hw = Hardware("cuda", "NVIDIA H100", (9, 0), apex_fused_wgrad=True)
    assert features("octothinker-3b-stable", hw=hw, use_te=False).tcfg["gradient_accumulation_fusion"] is True


@pytest.mark.parametrize("key,hw,use_te,match", [
    ("perf.tp_comm_overlap", H100_NO_TE, False, "Transformer Engine layer spec"),
    ("perf.gradient_accumulation_fusion", CPU, False, "no CUDA GPU"),
    ("perf.gradient_accumulation_fusion", H100_NO_TE, False, "fused_weight_gradient_mlp_cuda"),
    ("perf.cross_entropy_fusion", H100_NO_TE, False, "parallel cross-entropy"),
])
def test_impossible_demands_are_refused_in_one_line(key, hw, use_te, match):
    overrides = [f"{key}=true", "parallel.tp=2", "parallel.sequence_parallel=true"]
    with pytest.raises(FeatureError, match=match) as info:
        features("octothinker-8b-stable", overrides, hw=hw, use_te=use_te)
    assert "\n" not in str(info.value) and key in str(info.value)


def test_false_switches_off_even_where_possible():
    f = features("octothinker-3b-stable", ["perf.cross_entropy_fusion=false", "perf.gradient_accumulation_fusion=false",
                                           "precision.grad_reduce_in_fp32=false"])
    assert not f.tcfg["cross_entropy_loss_fusion"] and not f.tcfg["gradient_accumulation_fusion"]
    assert f.ddp == {"grad_reduce_in_fp32": False}


def test_recompute_fields():
    r = load_recipe("tiny-cpu", ["perf.recompute=full"])  # 4 layers, one stage
    assert recompute_fields(r) == dict(recompute_granularity="full", recompute_method="block", recompute_num_layers=4)
    r = load_recipe("tiny-cpu", ["perf.recompute=full", "perf.recompute_method=uniform"])
    assert recompute_fields(r)["recompute_num_layers"] == 1
    r = load_recipe("tiny-cpu", ["perf.recompute=full", "perf.recompute_num_layers=2", "parallel.pp=2"])
    assert recompute_fields(r) == dict(recompute_granularity="full", recompute_method="block", recompute_num_layers=2)
    r = load_recipe("tiny-cpu", ["perf.recompute=selective", "perf.recompute_modules=[core_attn,mlp]"])
    assert recompute_fields(r) == dict(recompute_granularity="selective", recompute_modules=["core_attn", "mlp"])
    assert recompute_fields(load_recipe("tiny-cpu")) == dict(recompute_granularity=None)


@pytest.mark.parametrize("overrides,match", [
    (["perf.recompute=full", "perf.recompute_num_layers=5"], "between 1 and the 4 layers"),
    (["perf.recompute=selective", "perf.recompute_num_layers=1"], "applies to perf.recompute=full only"),
    (["perf.recompute=selective", "perf.recompute_modules=[moe]"], "choose from core_attn, mlp, layernorm"),
    (["perf.recompute=partial"], "perf.recompute='partial' is not one of"),
    (["perf.tp_comm_overlap=true"], "needs parallel.tp > 1 and parallel.sequence_parallel=true"),
    (["perf.tp_comm_bootstrap=ucx"], "perf.tp_comm_bootstrap='ucx'"),
])
def test_bad_perf_keys_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe("tiny-cpu", overrides)

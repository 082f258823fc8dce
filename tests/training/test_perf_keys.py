"""The ``perf`` and precision keys reach the built Megatron-Core objects, and recomputation changes no number.

One process on CPU (gloo). Recomputation replays the forward in the backward pass with the same weights and RNG
state (no dropout in these models), so losses and gradient norms equal the run without it; 1e-6 relative allows
for a different fp32 summation order in the replay.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.training.test_layouts import run_train

SCRIPT = textwrap.dedent("""
    import json, sys
    from megatron_octo import parallel
    from megatron_octo.config import load_recipe
    from megatron_octo.training.build import build

    recipe = load_recipe("tiny-cpu", sys.argv[1:])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    parts = build(recipe, ctx, iters=3)
    c, d = parts.config, parts.model[0].ddp_config
    fields = ("recompute_granularity", "recompute_method", "recompute_num_layers", "recompute_modules",
              "tp_comm_overlap", "gradient_accumulation_fusion", "cross_entropy_loss_fusion",
              "cross_entropy_fusion_impl", "fp8", "fp8_param", "first_last_layers_bf16")
    out = {f: getattr(c, f) for f in fields}
    out.update(grad_reduce_in_fp32=d.grad_reduce_in_fp32, fp8_param_gather=d.fp8_param_gather,
               optimizer_fp8_recipe=parts.optimizer.config.fp8_recipe)
    print("RESULT " + json.dumps(out))
    parallel.destroy(ctx)
""")


def built(overrides):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *overrides], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), proc.stdout


def test_keys_reach_transformer_config_and_ddp_config():
    out, stdout = built(["perf.recompute=full", "perf.recompute_method=uniform", "perf.recompute_num_layers=2",
                         "precision.grad_reduce_in_fp32=false"])
    assert (out["recompute_granularity"], out["recompute_method"], out["recompute_num_layers"]) == \
        ("full", "uniform", 2)
    assert out["grad_reduce_in_fp32"] is False
    # CPU: every fused feature resolves to off, silently; FP8 off.
    assert not out["tp_comm_overlap"] and not out["gradient_accumulation_fusion"]
    assert not out["cross_entropy_loss_fusion"] and out["cross_entropy_fusion_impl"] == "native"
    assert out["fp8"] is None and out["fp8_param"] is False and out["fp8_param_gather"] is False
    assert out["optimizer_fp8_recipe"] is None
    assert "[octo] perf." not in stdout


def test_defaults_keep_grad_reduce_in_fp32_and_no_recompute():
    out, _ = built([])
    assert out["grad_reduce_in_fp32"] is True and out["recompute_granularity"] is None


def test_selective_recompute_modules_reach_the_config():
    out, _ = built(["perf.recompute=selective", "perf.recompute_modules=[core_attn,mlp]"])
    assert out["recompute_granularity"] == "selective" and out["recompute_modules"] == ["core_attn", "mlp"]


def test_fp8_auto_on_cpu_trains_without_fp8_and_says_so(tmp_path):
    out, stdout = built(["precision.fp8=auto"])
    assert out["fp8"] is None
    assert "[octo] precision.fp8=auto: FP8 off" in stdout and "no CUDA GPU" in stdout


def test_explicit_fp8_on_cpu_is_a_one_line_error(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir",
                           str(tmp_path / "run"), "precision.fp8=hybrid", "precision.dtype=bf16"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("octo: error:")]
    assert len(errors) == 1 and "precision.fp8=hybrid cannot run here: no CUDA GPU" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return run_train(tmp_path_factory.mktemp("plain"), 1, [])


@pytest.mark.parametrize("overrides", [
    ["perf.recompute=full"],
    ["perf.recompute=full", "perf.recompute_method=uniform", "perf.recompute_num_layers=2"],
    ["perf.recompute=selective", "perf.recompute_modules=[core_attn,mlp]"],
], ids=["full-block", "full-uniform-2", "selective"])
def test_recomputation_leaves_losses_and_grad_norms_unchanged(plain, tmp_path, overrides):
    records = run_train(tmp_path / "run", 1, overrides)
    assert len(records) == len(plain) == 3
    for ref, got in zip(plain, records):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6), (overrides, ref, got)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6), (overrides, ref, got)

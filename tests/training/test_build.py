"""The built model on one process: invariant init wired to the real parameter names, optimizer and schedule."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, math, sys
    import torch
    from megatron_octo import parallel
    from megatron_octo.config import load_recipe
    from megatron_octo.training.build import build

    recipe = load_recipe(sys.argv[1], ["schedule.warmup_iters=0"])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    parts = build(recipe, ctx, iters=10)
    params = dict(parts.model[0].module.named_parameters())
    out = {
        "names": sorted(params),
        "norms_are_ones": all(torch.equal(p, torch.ones_like(p)) for n, p in params.items() if "norm" in n),
        "biases_are_zero": all(torch.equal(p, torch.zeros_like(p)) for n, p in params.items() if n.endswith("bias")),
        "fc1_std": params["decoder.layers.0.mlp.linear_fc1.weight"].std().item(),
        "fc2_std": params["decoder.layers.0.mlp.linear_fc2.weight"].std().item(),
        "proj_std": params["decoder.layers.0.self_attention.linear_proj.weight"].std().item(),
        "lr": parts.optimizer.param_groups[0]["lr"],
        "dtype": str(parts.params_dtype),
        "cpu_compat": ctx.cpu_compat,
    }
    print("RESULT " + json.dumps(out))
    parallel.destroy(ctx)
""")


@functools.lru_cache(maxsize=None)
def build_report(recipe):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, recipe], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("recipe", ["tiny-cpu", "tiny-cpu-qwen2"])
def test_built_model_follows_init_rules(recipe):
    out = build_report(recipe)
    assert out["norms_are_ones"] and out["biases_are_zero"]
    assert out["cpu_compat"] is True and out["dtype"] == "torch.float32"
    # tiny presets: init std 0.02, 4 layers -> residual projections 0.02 / sqrt(8) = 0.00707.
    # 8,192 (fc1: 256x64 = 16,384) draws each: sample std within ~1%; allow 5%.
    assert out["fc1_std"] == pytest.approx(0.02, rel=0.05)
    assert out["fc2_std"] == pytest.approx(0.02 / 8 ** 0.5, rel=0.05)
    assert out["proj_std"] == pytest.approx(0.02 / 8 ** 0.5, rel=0.05)
    assert out["lr"] == pytest.approx(3e-3)  # tiny-cpu's peak LR, no warm-up


def test_qwen2_has_qkv_biases_and_llama_none():
    assert any(n.endswith("linear_qkv.bias") for n in build_report("tiny-cpu-qwen2")["names"])
    assert not any(n.endswith("bias") for n in build_report("tiny-cpu")["names"])

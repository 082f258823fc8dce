"""The shipped recipes: each loads and validates, resolves its model preset and inherits from its base.

Expected numbers are copied from the recipe YAML files and the tiny presets' config.json dicts
(``megatron_octo/models/llama.py`` ``_tiny``, ``megatron_octo/models/qwen2.py`` ``tiny-qwen2``), not computed.
"""

from __future__ import annotations

import pytest

from megatron_octo.config import RecipeConfig, check_world, describe, load_recipe, recipe_names, to_yaml, validate


def test_the_smoke_recipes_are_shipped():
    assert {"tiny-cpu", "tiny-cpu-qwen2"} <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads_and_validates(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, RecipeConfig)
    assert recipe.name == name
    assert describe(name), f"recipe {name} has no description"
    validate(recipe)  # load_recipe validated already; validating the result again must not raise


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_round_trips_through_yaml(name, tmp_path):
    recipe = load_recipe(name)
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(recipe))
    assert load_recipe(str(path)) == recipe


def test_tiny_cpu_resolves_the_tiny_llama_preset():
    m = load_recipe("tiny-cpu").model
    # tiny-llama config.json: 4 layers, width 64, SwiGLU 128, 4 heads of 16, 2 KV heads, vocab 256, 256 positions,
    # theta 5e5, llama3 scaling factor 4 over 64 original positions, tied embeddings.
    assert (m.family, m.preset) == ("llama", "tiny-llama")
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size) == (4, 64, 128)
    assert (m.num_attention_heads, m.num_query_groups, m.kv_channels) == (4, 2, 16)
    assert (m.vocab_size, m.max_position_embeddings) == (256, 256)
    assert m.rotary_base == 500000.0
    assert (m.rope_scaling_factor, m.rope_low_freq_factor, m.rope_high_freq_factor) == (4.0, 1.0, 4.0)
    assert m.rope_original_max_position == 64
    assert m.norm_epsilon == 1e-5
    assert m.tie_word_embeddings is True
    assert m.add_qkv_bias is False
    # Not decided by a preset: the schema defaults.
    assert (m.make_vocab_size_divisible_by, m.spec) == (128, "auto")


def test_tiny_cpu_train_settings_come_from_its_yaml():
    r = load_recipe("tiny-cpu")
    assert (r.train.iters, r.train.tokens) == (30, None)
    assert (r.train.global_batch, r.train.micro_batch, r.train.seq_len) == (8, 2, 64)
    assert (r.schedule.lr, r.schedule.min_lr, r.schedule.style, r.schedule.warmup_iters) == (3e-3, 3e-4, "cosine", 3)
    assert r.precision.dtype == "fp32"
    assert r.data.kind == "synthetic"
    # The recipe promises to run unchanged under 1, 2 and 4 processes: DP = world size with tp = pp = 1.
    assert [check_world(r, world) for world in (1, 2, 4)] == [1, 2, 4]


def test_tiny_cpu_qwen2_inherits_train_settings_from_tiny_cpu():
    base, qwen = load_recipe("tiny-cpu"), load_recipe("tiny-cpu-qwen2")
    assert qwen.name == "tiny-cpu-qwen2"
    assert (qwen.model.family, qwen.model.preset) == ("qwen2", "tiny-qwen2")
    assert qwen.model.add_qkv_bias is True
    # tiny-qwen2 config.json: rope_theta 1e6, rms_norm_eps 1e-6, no rope scaling, 4 layers, 2 KV heads.
    assert qwen.model.rotary_base == 1000000.0
    assert qwen.model.norm_epsilon == 1e-6
    assert qwen.model.rope_scaling_factor is None
    assert (qwen.model.num_layers, qwen.model.num_attention_heads, qwen.model.num_query_groups) == (4, 4, 2)
    # Everything but the model (and name/description) comes from the base recipe.
    for section in ("parallel", "train", "data", "schedule", "optimizer", "precision", "checkpoint", "logging"):
        assert getattr(qwen, section) == getattr(base, section), section
    assert qwen.train.iters == 30 and qwen.schedule.lr == 3e-3
    assert qwen.description != base.description


def test_describe_reads_the_recipe_description():
    assert describe("tiny-cpu").startswith("Tiny Llama on synthetic tokens")
    assert describe("tiny-cpu-qwen2").startswith("Tiny Qwen2")

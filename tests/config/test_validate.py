"""Cross-field checks: one test per error, each a one-line ConfigError naming the field.

The base is tiny-cpu (tiny-llama: 4 layers, 4 heads, 2 KV groups, 256 positions; global batch 8, micro batch 2,
seq 64, lr 3e-3, min_lr 3e-4).
"""

from __future__ import annotations

import dataclasses

import pytest

from megatron_octo.config import ConfigError, check_world, load_recipe, train_iters, validate

from .conftest import assert_one_line_error


def expect_error(*fragments: str, recipe: str = "tiny-cpu", overrides=()) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(recipe, list(overrides))
    return assert_one_line_error(excinfo, *fragments)


def blend_recipe(tmp_path, sources: str) -> str:
    path = tmp_path / "blend.yaml"
    path.write_text(f"base: tiny-cpu\ndata:\n  kind: blend\n  sources:\n{sources}")
    return str(path)


# ------------------------------------------------------------------------------------------- parallel


def test_tp_must_divide_attention_heads():
    expect_error("parallel.tp=3", "model.num_attention_heads=4", overrides=["parallel.tp=3"])


def test_tp_must_divide_key_value_groups():
    # 4 heads % tp 4 == 0, but 2 KV groups % 4 != 0: the KV-groups message, not the heads one.
    message = expect_error("parallel.tp=4", "model.num_query_groups=2", overrides=["parallel.tp=4"])
    assert "num_attention_heads" not in message


def test_tp_dividing_heads_and_groups_is_fine():
    assert load_recipe("tiny-cpu", ["parallel.tp=2"]).parallel.tp == 2


def test_pp_must_divide_layers():
    expect_error("parallel.pp=3", "model.num_layers=4", overrides=["parallel.pp=3"])


def test_pp_dividing_layers_is_fine():
    assert load_recipe("tiny-cpu", ["parallel.pp=4"]).parallel.pp == 4


def test_sequence_parallel_needs_tp():
    expect_error("parallel.sequence_parallel", "parallel.tp", overrides=["parallel.sequence_parallel=true"])


def test_overlap_param_gather_needs_the_distributed_optimizer():
    expect_error(
        "parallel.overlap_param_gather", "parallel.distributed_optimizer",
        overrides=["parallel.overlap_param_gather=true"],
    )


def test_query_groups_must_divide_heads():
    expect_error("model.num_query_groups=3", "model.num_attention_heads=4", overrides=["model.num_query_groups=3"])


# ---------------------------------------------------------------------------------------------- train


def test_global_batch_divisible_by_micro_batch():
    expect_error("train.global_batch=7", "train.micro_batch=2", overrides=["train.global_batch=7"])


def test_neither_iters_nor_tokens():
    expect_error("train.iters", "train.tokens", overrides=["train.iters=null"])


def test_seq_len_above_max_position_embeddings():
    expect_error("train.seq_len=512", "model.max_position_embeddings=256", overrides=["train.seq_len=512"])


def test_seq_len_at_max_position_embeddings_is_fine():
    assert load_recipe("tiny-cpu", ["train.seq_len=256"]).train.seq_len == 256


def test_train_iters_from_tokens_rounds_up():
    # 1000 tokens / (8 sequences * 64 tokens = 512 a step) = 1.95 -> 2 steps.
    recipe = load_recipe("tiny-cpu", ["train.iters=null", "train.tokens=1000"])
    assert train_iters(recipe) == 2
    # 1024 tokens are exactly 2 steps; 1025 need a third.
    assert train_iters(load_recipe("tiny-cpu", ["train.iters=null", "train.tokens=1024"])) == 2
    assert train_iters(load_recipe("tiny-cpu", ["train.iters=null", "train.tokens=1025"])) == 3


def test_a_later_layer_setting_one_budget_clears_the_other():
    # tiny-cpu sets train.iters=30; a train.tokens override replaces it (it used to be ignored silently):
    # 1,000,000 tokens / (global batch 8 x 64 tokens) = 1953.1 -> 1954 steps
    recipe = load_recipe("tiny-cpu", ["train.tokens=1000000"])
    assert recipe.train.iters is None and train_iters(recipe) == 1954
    assert load_recipe("tiny-cpu", ["train.iters=7"]).train.iters == 7


def test_both_budgets_in_one_layer_are_refused():
    with pytest.raises(ConfigError, match="train.iters=5 and train.tokens=1000 are both set"):
        load_recipe("tiny-cpu", ["train.iters=5", "train.tokens=1000"])


# ---------------------------------------------------------------------------------------- world size


def test_check_world_gives_the_data_parallel_size():
    recipe = load_recipe("tiny-cpu", ["parallel.tp=2", "parallel.pp=2"])
    assert check_world(recipe, 4) == 1
    assert check_world(recipe, 8) == 2  # global 8 / (micro 2 * DP 2) = 2 micro-batches a rank


def test_global_batch_divisible_by_micro_batch_times_dp():
    recipe = load_recipe("tiny-cpu", ["train.global_batch=8", "train.micro_batch=2"])
    # world 8, tp=pp=cp=1 -> DP 8 -> micro_batch*DP = 16 does not divide 8.
    with pytest.raises(ConfigError) as excinfo:
        check_world(recipe, 8)
    assert_one_line_error(excinfo, "train.global_batch=8", "train.micro_batch*DP", "16")


def test_validate_with_world_size_checks_the_split():
    recipe = load_recipe("tiny-cpu")
    validate(recipe, world_size=4)
    with pytest.raises(ConfigError) as excinfo:
        validate(recipe, world_size=8)
    assert_one_line_error(excinfo, "train.global_batch")


def test_world_size_divisible_by_model_parallel_size():
    recipe = load_recipe("tiny-cpu", ["parallel.tp=2", "parallel.pp=2"])
    with pytest.raises(ConfigError) as excinfo:
        check_world(recipe, 6)
    assert_one_line_error(excinfo, "parallel.tp*pp*cp=4", "6")


# ----------------------------------------------------------------------------------------------- data


def test_mixture_weights_must_sum_to_one(tmp_path):
    path = blend_recipe(
        tmp_path, "    - {name: web, weight: 0.5, path: /d/web}\n    - {name: math, weight: 0.3, path: /d/math}\n"
    )
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(path)
    assert_one_line_error(excinfo, "data.sources", "0.8", "sum to 1")


def test_mixture_weights_summing_to_one_are_fine(tmp_path):
    # 0.7 + 0.2 + 0.1 is 0.9999999999999999 in floating point.
    path = blend_recipe(
        tmp_path,
        "    - {name: a, weight: 0.7, path: /d/a}\n    - {name: b, weight: 0.2, path: /d/b}\n"
        "    - {name: c, weight: 0.1, path: /d/c}\n",
    )
    assert [s.weight for s in load_recipe(path).data.sources] == [0.7, 0.2, 0.1]


def test_blend_source_needs_a_path(tmp_path):
    path = blend_recipe(tmp_path, "    - {name: web, weight: 0.5, path: /d/web}\n    - {name: math, weight: 0.5}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(path)
    assert_one_line_error(excinfo, "data.sources[1]", "math", "path")


def test_blend_needs_sources():
    expect_error("data.kind=blend", "data.sources", overrides=["data.kind=blend"])


# ------------------------------------------------------------------------------------------- schedule


def test_invalid_choice_lists_the_choices():
    expect_error("schedule.style='foo'", "constant", "cosine", "linear", overrides=["schedule.style=foo"])


def test_min_lr_above_lr():
    expect_error("schedule.min_lr=0.01", "schedule.lr=0.003", overrides=["schedule.min_lr=0.01"])


def test_validate_catches_a_recipe_edited_after_loading():
    recipe = load_recipe("tiny-cpu")
    broken = dataclasses.replace(recipe, parallel=dataclasses.replace(recipe.parallel, tp=3))
    with pytest.raises(ConfigError) as excinfo:
        validate(broken)
    assert_one_line_error(excinfo, "parallel.tp=3")

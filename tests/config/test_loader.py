"""Recipe resolution: overrides, YAML path recipes, ``base`` chains, and the loader's one-line errors."""

from __future__ import annotations

import pytest
import yaml

from megatron_octo.config import ConfigError, load_recipe, to_yaml

from .conftest import assert_one_line_error


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------------------------- overrides


def test_overrides_take_effect_with_the_field_types():
    r = load_recipe("tiny-cpu", ["parallel.tp=2", "schedule.lr=1e-4", "schedule.min_lr=0", "train.iters=7"])
    assert r.parallel.tp == 2 and type(r.parallel.tp) is int
    assert r.schedule.lr == 1e-4 and type(r.schedule.lr) is float
    assert r.schedule.min_lr == 0.0 and type(r.schedule.min_lr) is float
    assert r.train.iters == 7 and type(r.train.iters) is int


def test_boolean_and_null_overrides():
    r = load_recipe("tiny-cpu", ["parallel.tp=2", "parallel.sequence_parallel=true", "checkpoint.save=false"])
    assert r.parallel.sequence_parallel is True
    assert r.checkpoint.save is False
    r = load_recipe("tiny-cpu", ["train.iters=null", "train.tokens=5000"])
    assert r.train.iters is None and r.train.tokens == 5000


def test_later_override_wins():
    assert load_recipe("tiny-cpu", ["parallel.tp=2", "parallel.tp=1"]).parallel.tp == 1


def test_override_beats_the_preset():
    # 2 layers instead of the preset's 4; the rest of the preset stays.
    m = load_recipe("tiny-cpu", ["model.num_layers=2"]).model
    assert m.num_layers == 2 and m.hidden_size == 64


def test_override_of_model_preset_switches_the_architecture():
    m = load_recipe("tiny-cpu", ["model.preset=tiny-llama-untied"]).model
    assert m.preset == "tiny-llama-untied"
    assert m.tie_word_embeddings is False
    assert m.num_layers == 4


def test_overrides_do_not_leak_into_later_loads():
    load_recipe("tiny-cpu", ["parallel.tp=2"])
    assert load_recipe("tiny-cpu").parallel.tp == 1


# ------------------------------------------------------------------------------------------ YAML recipes


def test_yaml_path_recipe_with_base(tmp_path):
    path = write(tmp_path / "mine.yaml", "base: tiny-cpu\ndescription: mine\ntrain:\n  iters: 5\n  seq_len: 32\n")
    r = load_recipe(path)
    assert r.name == "mine"
    assert r.description == "mine"
    assert (r.train.iters, r.train.seq_len) == (5, 32)
    assert (r.train.global_batch, r.train.micro_batch) == (8, 2)  # from tiny-cpu
    assert r.schedule.style == "cosine"  # from tiny-cpu
    assert r.model.preset == "tiny-llama" and r.model.num_layers == 4  # the base's preset is resolved


def test_yaml_recipe_fields_beat_the_preset_and_overrides_beat_the_yaml(tmp_path):
    path = write(tmp_path / "r.yaml", "base: tiny-cpu\nmodel:\n  num_layers: 2\ntrain:\n  iters: 5\n")
    r = load_recipe(path)
    assert r.model.num_layers == 2
    assert load_recipe(path, ["train.iters=9"]).train.iters == 9


def test_three_level_chain_of_yaml_recipes(tmp_path):
    parent = write(tmp_path / "parent.yaml", "base: tiny-cpu-qwen2\ntrain:\n  iters: 4\n  micro_batch: 4\n")
    child = write(tmp_path / "child.yaml", f"base: {parent}\ntrain:\n  iters: 6\n")
    r = load_recipe(child)
    assert r.name == "child"
    assert r.model.family == "qwen2" and r.model.add_qkv_bias is True  # from tiny-cpu-qwen2
    assert (r.train.iters, r.train.micro_batch, r.train.seq_len) == (6, 4, 64)  # child, parent, tiny-cpu


def test_a_recipe_name_field_wins_over_the_file_name(tmp_path):
    assert load_recipe(write(tmp_path / "file.yaml", "base: tiny-cpu\nname: stage-1\n")).name == "stage-1"


def test_to_yaml_reloads_to_an_equal_recipe(tmp_path):
    recipe = load_recipe("tiny-cpu", ["parallel.tp=2", "train.iters=null", "train.tokens=4096", "schedule.lr=1e-3"])
    text = to_yaml(recipe)
    assert yaml.safe_load(text)["parallel"]["tp"] == 2
    assert load_recipe(write(tmp_path / "resolved.yaml", text)) == recipe


def test_to_yaml_keeps_blend_sources(tmp_path):
    path = write(
        tmp_path / "blend.yaml",
        "base: tiny-cpu\ndata:\n  kind: blend\n  sources:\n"
        "    - {name: web, weight: 0.75, path: /data/web}\n    - {name: math, weight: 0.25, path: /data/math}\n",
    )
    recipe = load_recipe(path)
    assert [(s.name, s.weight, s.path) for s in recipe.data.sources] == [
        ("web", 0.75, "/data/web"), ("math", 0.25, "/data/math"),
    ]
    assert load_recipe(write(tmp_path / "again.yaml", to_yaml(recipe))) == recipe


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", ["parallel.tpp=2"])
    message = assert_one_line_error(excinfo, "parallel.tpp", "'tp'")
    assert "did you mean" in message.lower()


def test_unknown_section_is_named():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", ["trainer.iters=2"])
    assert_one_line_error(excinfo, "trainer")


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", ["train.iters=abc"])
    assert_one_line_error(excinfo, "train.iters", "abc")


def test_wrong_type_in_a_yaml_recipe_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(write(tmp_path / "r.yaml", "base: tiny-cpu\nparallel:\n  tp: two\n"))
    assert_one_line_error(excinfo, "parallel.tp", "two")


def test_unknown_recipe_name_suggests_the_close_one():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpuu")
    message = assert_one_line_error(excinfo, "tiny-cpuu", "tiny-cpu")
    assert "did you mean" in message.lower()


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(str(tmp_path / "nope.yaml"))
    assert_one_line_error(excinfo, "nope.yaml", "does not exist")


@pytest.mark.parametrize("item", ["train.iters", "=5"])
def test_bad_override_syntax(item):
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", [item])
    assert_one_line_error(excinfo, repr(item), "key=value")


def test_invalid_yaml_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(write(tmp_path / "bad.yaml", "base: tiny-cpu\ntrain: [1,\n"))
    assert_one_line_error(excinfo, "bad.yaml", "YAML")


def test_a_yaml_list_is_not_a_recipe(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(write(tmp_path / "list.yaml", "- base: tiny-cpu\n"))
    assert_one_line_error(excinfo, "list.yaml", "mapping")


def test_unknown_model_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", ["model.preset=tiny-lama"])
    assert_one_line_error(excinfo, "model.preset", "tiny-lama", "tiny-llama")


def test_recipe_inheriting_from_itself(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write(a, f"base: {b}\n")
    write(b, f"base: {a}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(str(a))
    assert_one_line_error(excinfo, "a.yaml", "inherits from itself", "base")


def test_recipe_naming_itself_as_base(tmp_path):
    a = tmp_path / "self.yaml"
    write(a, f"base: {a}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_recipe(str(a))
    assert_one_line_error(excinfo, "self.yaml", "inherits from itself")


def test_a_section_given_a_scalar_is_a_config_error():
    with pytest.raises(ConfigError) as excinfo:
        load_recipe("tiny-cpu", ["model=3"])
    assert_one_line_error(excinfo, "model")


def test_a_list_index_override_loads_or_is_a_config_error(tmp_path):
    path = write(
        tmp_path / "blend.yaml",
        "base: tiny-cpu\ndata:\n  kind: blend\n  sources:\n"
        "    - {name: web, weight: 0.5, path: /data/web}\n    - {name: math, weight: 0.3, path: /data/math}\n",
    )
    try:
        recipe = load_recipe(path, ["data.sources.1.weight=0.5"])
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert recipe.data.sources[1].weight == 0.5


def test_a_relative_base_path_is_relative_to_the_recipe_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "parent.yaml", "base: tiny-cpu\ntrain:\n  iters: 7\n")
    child = write(tmp_path / "sub" / "child.yaml", "base: parent.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert load_recipe(str(child)).train.iters == 7

"""The shipped mixtures carry RECIPE.md's sources and weights; recipes name them or list sources inline."""

from __future__ import annotations

import pytest

from megatron_octo.config import ConfigError, load_recipe
from megatron_octo.data.mixtures import blend_sources, load_mixture, mixture_names

# RECIPE.md, "Stage 1: Stable" and "Stage 2: Decay" tables (fractions of tokens).
RECIPE = {
    "stable": {"megamath-web-pro-max": 0.725, "dclm-baseline": 0.10, "megamath-text-code-block": 0.10,
               "megamath-qa": 0.05, "megamath-code": 0.0125, "megamath-translated-code": 0.0125},
    "decay-long": {"dclm-baseline": 0.05, "instruct": 0.10, "megamath-web-pro": 0.55, "openr1-math-220k": 0.15,
                   "am-deepseek-r1-distilled": 0.15},
    "decay-short": {"dclm-baseline": 0.05, "instruct": 0.10, "megamath-web-pro": 0.55, "megamath-qa": 0.025,
                    "openmathinstruct-2": 0.175, "numinamath-1.5": 0.10},
    "decay-hybrid": {"dclm-baseline": 0.05, "instruct": 0.10, "megamath-web-pro": 0.55, "openr1-math-220k": 0.10,
                     "openmathinstruct-2": 0.10, "numinamath-1.5": 0.10},
}


def test_the_four_mixtures_are_shipped():
    assert mixture_names() == ["decay-hybrid", "decay-long", "decay-short", "stable"]


@pytest.mark.parametrize("name", list(RECIPE))
def test_sources_and_weights_are_the_recipe_tables(name):
    mixture = load_mixture(name)
    assert {s.name: s.weight for s in mixture.sources} == RECIPE[name]
    assert mixture.description


@pytest.mark.parametrize("name", ["decay-long", "decay-short", "decay-hybrid"])
def test_decay_branches_are_30_percent_qa(name):
    # RECIPE.md: "QA share | 30% of tokens"; QA = the short- and long-CoT sources.
    qa = sum(s.weight for s in load_mixture(name).sources if s.format in ("qa", "long_cot"))
    assert qa == pytest.approx(0.30)


def test_paths_are_placeholders_under_octo_data(monkeypatch):
    monkeypatch.delenv("OCTO_DATA", raising=False)
    web = load_mixture("stable").sources[0]
    assert web.path == "/data/octothinker/megamath-web-pro-max/text_document"
    monkeypatch.setenv("OCTO_DATA", "/mnt/corpora")
    assert load_mixture("decay-long").sources[1].path == "/mnt/corpora/instruct/text_document"


def test_recipe_names_a_mixture(monkeypatch):
    monkeypatch.setenv("OCTO_DATA", "/d")
    recipe = load_recipe("tiny-cpu", ["data.kind=blend", "data.mixture=decay-short"])
    assert recipe.data.mixture == "decay-short" and recipe.data.sources == []
    sources = blend_sources(recipe.data)
    assert [(s.name, s.weight) for s in sources][3] == ("megamath-qa", 0.025)
    assert sources[3].path == "/d/megamath-qa/text_document"


def test_inline_sources_still_work(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: tiny-cpu\ndata:\n  kind: blend\n  sources:\n"
                    "    - {name: a, weight: 0.25, path: /x/a}\n    - {name: b, weight: 0.75, path: /x/b}\n")
    assert [(s.name, s.weight) for s in blend_sources(load_recipe(str(path)).data)] == [("a", 0.25), ("b", 0.75)]


def test_mixture_and_sources_together_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: tiny-cpu\ndata:\n  kind: blend\n  mixture: stable\n  sources:\n"
                    "    - {name: a, weight: 1.0, path: /x/a}\n")
    with pytest.raises(ConfigError, match="data.mixture or data.sources, not both"):
        load_recipe(str(path))


def test_unknown_mixture_suggests_a_name():
    with pytest.raises(ConfigError, match=r"unknown data.mixture 'decay-lng' \(did you mean decay-long"):
        load_recipe("tiny-cpu", ["data.kind=blend", "data.mixture=decay-lng"])


def test_mixture_file_weights_must_sum_to_one(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("sources:\n  - {name: a, weight: 0.5, path: /a}\n  - {name: b, weight: 0.4, path: /b}\n")
    with pytest.raises(ConfigError, match="sum to 0.9"):
        load_mixture(str(path))
    path.write_text("sources:\n  - {name: a, weight: 1.0, path: /a, kind: web}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_mixture(str(path))


@pytest.mark.parametrize("split", ["0,1,0", "a,b", "1,2,3,4", "-1,1"])
def test_bad_split_is_refused(split):
    with pytest.raises(ConfigError, match="data.split"):
        load_recipe("tiny-cpu", ["data.kind=blend", "data.mixture=stable", f"data.split='{split}'"])


def test_synthetic_ignores_the_data_fields():
    recipe = load_recipe("tiny-cpu", ["data.mixture=nonexistent"])
    assert recipe.data.kind == "synthetic"

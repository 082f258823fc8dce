"""Recipes: YAML diffs over the dataclass defaults, resolved into a typed ``RecipeConfig``.

Resolution order (later wins): dataclass defaults, the model preset named by ``model.preset``, the recipe's
``base`` chain, the recipe itself, then ``key=value`` overrides. A recipe names its parent with ``base: NAME``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from megatron_octo.config.errors import ConfigError
from megatron_octo.config.schema import RecipeConfig
from megatron_octo.config.validate import validate

__all__ = ["ConfigError", "describe", "load_recipe", "recipe_names", "to_yaml"]

RECIPE_DIR = Path(__file__).parent / "recipes"


def recipe_names() -> List[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _recipe_path(name_or_path: str, relative_to: Optional[Path] = None) -> Path:
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute() and path.suffix in (".yaml", ".yml"):
        path = relative_to / path  # a `base:` path is relative to the recipe that names it
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name_or_path, recipe_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown recipe '{name_or_path}'{hint}: see `octo recipe list`, or pass a YAML path")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text file (not UTF-8); pass a YAML recipe") from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"recipe {path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _recipe_chain(name_or_path: str, seen: Optional[List[str]] = None,
                  relative_to: Optional[Path] = None) -> List[dict]:
    """The recipe and its ``base`` ancestors, root first."""
    seen = seen or []
    path = _recipe_path(name_or_path, relative_to).resolve()
    if str(path) in seen:
        raise ConfigError(f"recipe {path} inherits from itself through 'base'")
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    base = data.pop("base", None)
    chain = _recipe_chain(str(base), seen + [str(path)], path.parent) if base else []
    return chain + [data]


def _parse_overrides(overrides: Sequence[str]) -> dict:
    items = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.iters=10")
        items.append(item)
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist(items))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {_first_line(exc)}") from None
    assert isinstance(parsed, dict)  # a dot-list always builds a mapping
    return parsed


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _merge(layers: List[dict]) -> RecipeConfig:
    base = OmegaConf.structured(RecipeConfig)
    try:
        merged = OmegaConf.merge(base, *layers)
        recipe = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f"field '{key}': " if key else ""
        raise ConfigError(f"{where}{_first_line(exc)}") from None
    except (TypeError, ValueError) as exc:  # e.g. an index override into a list OmegaConf cannot merge
        raise ConfigError(f"cannot apply the recipe layers: {_first_line(exc)}") from None
    assert isinstance(recipe, RecipeConfig)  # to_object of a structured config is its dataclass
    return recipe


def _one_budget(layers: List[dict], names: List[str]) -> None:
    """A layer that sets one of ``train.iters`` / ``train.tokens`` clears the other (``octothinker-3b-stable
    train.iters=10`` runs 10 steps, not the recipe's token budget); one layer setting both is refused."""
    for layer, name in zip(layers, names):
        train = layer.get("train")
        if not isinstance(train, dict):
            continue
        given = [k for k in ("iters", "tokens") if train.get(k) is not None]
        if len(given) == 2:
            raise ConfigError(f"{name}: train.iters={train['iters']} and train.tokens={train['tokens']} are both set; "
                              "set one (the steps derive from the tokens), or null the other")
        if given:
            train.setdefault("tokens" if given[0] == "iters" else "iters", None)


def _preset_layer(layers: List[dict]) -> Dict:
    """The ``model.preset`` named by the last layer that names one, as a partial recipe."""
    from megatron_octo.models import preset as model_preset

    name = None
    for layer in layers:
        model = layer.get("model")
        if model is not None and not isinstance(model, dict):
            raise ConfigError(f"field 'model' must be a mapping of model fields, got {model!r}")
        name = (model or {}).get("preset", name)
    if name is None:
        return {}
    try:
        return {"model": model_preset(name)}
    except ValueError as exc:
        raise ConfigError(f"model.preset: {exc}") from None


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Resolve a shipped recipe name or a YAML path plus overrides into a typed, validated recipe."""
    chain = _recipe_chain(name_or_path)
    layers = chain + [_parse_overrides(overrides)]
    _one_budget(layers, [f"recipe {layer.get('name', name_or_path)}" for layer in chain] + ["the overrides"])
    recipe = _merge([_preset_layer(layers)] + layers)
    validate(recipe)
    return recipe


def to_yaml(recipe: RecipeConfig) -> str:
    """The fully resolved recipe as YAML (what `octo recipe show` prints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe), sort_keys=False)


def describe(name: str) -> str:
    """A recipe's one-line description without resolving it."""
    for layer in reversed(_recipe_chain(name)):
        if layer.get("description"):
            return str(layer["description"])
    return ""

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


def _recipe_chain(
    name_or_path: str, seen: Optional[List[str]] = None, relative_to: Optional[Path] = None
) -> List[dict]:
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
            raise ConfigError(
                f"{name}: train.iters={train['iters']} and train.tokens={train['tokens']} are both set; "
                "set one (the steps derive from the tokens), or null the other"
            )
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
    """Resolve a shipped recipe name or a YAML path plus overrides into a typed, validated recipe.

    When the stage starts from a checkpoint (``checkpoint.branch_from``, ``checkpoint.load``, ``rl.init``) or names
    ``model.from_hf``, the model comes from there (see ``_checkpoint_model``)."""
    chain = _recipe_chain(name_or_path)
    layers = chain + [_parse_overrides(overrides)]
    _one_budget(layers, [f"recipe {layer.get('name', name_or_path)}" for layer in chain] + ["the overrides"])
    recipe = _merge([_preset_layer(layers)] + layers)
    source = _model_source(recipe)
    if source is not None and _exists(source[1]):
        recipe = _merge(_checkpoint_model(source, layers, recipe))
    validate(recipe)
    return recipe


# Model fields a checkpoint decides and a recipe may only restate (compared when the recipe sets them).
_CHECKPOINT_FIELDS = (
    "family",
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "vocab_size",
    "rotary_base",
    "rope_scaling_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_max_position",
    "norm_epsilon",
    "tie_word_embeddings",
    "add_qkv_bias",
)
# Fields a recipe file states together with its preset: a checkpoint replaces them like the preset's own.
_PRESET_COMPANIONS = ("family", "preset")


def _model_source(recipe: RecipeConfig) -> Optional[tuple]:
    """(field, spec) of where the model comes from, or None."""
    for field, value in (
        ("checkpoint.branch_from", recipe.checkpoint.branch_from),
        ("checkpoint.load", recipe.checkpoint.load),
        ("rl.init", recipe.rl.init),
        ("model.from_hf", recipe.model.from_hf),
    ):
        if value:
            return field, str(value)
    return None


def _exists(spec: str) -> bool:
    """Whether ``spec`` names something here (a path, ``DIR:STEP``, or a Hub model ID). A checkpoint that does not
    exist yet (a later stage rendered before the earlier one ran) leaves the recipe's model as it is; the stage
    itself reports a missing checkpoint when it starts."""
    from megatron_octo.utils.hub import is_hub_id

    return Path(spec).exists() or Path(spec.rsplit(":", 1)[0]).exists() or is_hub_id(spec)


def _pending(spec: str, exc: Exception) -> bool:
    """Whether ``spec`` is a directory that holds no checkpoint yet: the run directory of a stage that is queued or
    running (`octo launch slurm --dependency afterok:JOB` renders the next stage before the first one saves)."""
    from megatron_octo.training.checkpoint import CheckpointError

    path = Path(spec.rsplit(":", 1)[0]) if not Path(spec).exists() else Path(spec)
    return isinstance(exc, CheckpointError) and path.is_dir() and str(exc).startswith("no complete checkpoint")


def _explicit_model_fields(layers: List[dict]) -> Dict:
    """Model fields the recipe files (except the preset and its family) and the overrides set themselves."""
    out: Dict = {}
    for i, layer in enumerate(layers):
        override = i == len(layers) - 1
        for key, value in (layer.get("model") or {}).items():
            if key != "preset" and (override or key not in _PRESET_COMPANIONS):
                out[key] = value
    return out


def _same(field: str, a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _checkpoint_model(source: tuple, layers: List[dict], recipe: RecipeConfig) -> List[dict]:
    """The recipe layers with the model of ``source`` in place of the preset; a ConfigError naming every field the
    recipe sets explicitly to something else than the checkpoint holds (head dimension and key-value groups
    compared as Megatron-Core derives them)."""
    from dataclasses import asdict, replace

    from megatron_octo.convert.errors import ConvertError
    from megatron_octo.convert.sources import model_config_of
    from megatron_octo.models.shapes import head_dim, query_groups
    from megatron_octo.training.checkpoint import CheckpointError
    from megatron_octo.utils.hub import is_hub_id

    field, spec = source
    try:
        found, kind = model_config_of(spec)
    except (ConvertError, CheckpointError) as exc:
        if is_hub_id(spec) or _pending(spec, exc):  # a previous stage has yet to write it: the stage will tell
            return [_preset_layer(layers)] + layers
        raise ConfigError(f"{field}={spec}: {_first_line(exc)}") from None
    explicit = _explicit_model_fields(layers)
    wanted = replace(recipe.model, **{k: v for k, v in asdict(found).items() if k in _CHECKPOINT_FIELDS})
    derived = {"kv_channels": head_dim, "num_query_groups": query_groups}
    diffs = []
    for key in _CHECKPOINT_FIELDS:
        if key not in explicit:
            continue
        ours, theirs = explicit[key], getattr(found, key)
        if key in derived:  # None means "derived": compare what Megatron-Core derives
            ours, theirs = derived[key](replace(found, **{key: ours})), derived[key](found)
        if not _same(key, ours, theirs):
            diffs.append(f"model.{key}: recipe {ours!r}, checkpoint {theirs!r}")
    if diffs:
        raise ConfigError(
            f"the model of {field}={spec} ({kind}) differs from the recipe's: {'; '.join(diffs)}: "
            f"drop these model fields to take the checkpoint's"
        )
    stripped = [
        {**layer, "model": {k: v for k, v in (layer.get("model") or {}).items() if k not in _PRESET_COMPANIONS}}
        if layer.get("model")
        else layer
        for layer in layers
    ]
    model = {k: getattr(wanted, k) for k in _CHECKPOINT_FIELDS}
    model["preset"] = found.preset
    for key in ("max_position_embeddings", "init_method_std"):  # the recipe's when it sets them
        if key not in explicit:
            model[key] = getattr(found, key)
    return [{"model": model}] + stripped


def to_yaml(recipe: RecipeConfig) -> str:
    """The fully resolved recipe as YAML (what `octo recipe show` prints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe), sort_keys=False)


def describe(name: str) -> str:
    """A recipe's one-line description without resolving it."""
    for layer in reversed(_recipe_chain(name)):
        if layer.get("description"):
            return str(layer["description"])
    return ""

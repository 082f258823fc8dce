"""Training mixtures: weighted lists of indexed-dataset sources, shipped as recipe data.

The four OctoThinker mixtures of RECIPE.md live in ``megatron_octo/config/mixtures/*.yaml`` (``stable``,
``decay-long``, ``decay-short``, ``decay-hybrid``). A mixture file is::

    description: one line
    sources:
      - {name: LABEL, weight: FRACTION_OF_TOKENS, format: text|qa|long_cot|chat, path: INDEXED_DATASET_PREFIX}

Paths may use OmegaConf interpolation; the shipped ones read ``${oc.env:OCTO_DATA,/data/octothinker}`` so one
environment variable points them at the data. ``format`` says which ``octo preprocess --format`` makes the source.

A recipe names a mixture with ``data: {kind: blend, mixture: stable}`` (a shipped name or a YAML path) or lists
``data.sources`` inline. This module only reads and checks mixtures (light imports: ``config.validate`` uses it);
``megatron_octo.data.blend`` builds the Megatron-Core datasets.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import yaml

from megatron_octo.config.errors import ConfigError
from megatron_octo.config.schema import DataConfig, DataSource
from megatron_octo.data.formatters import FORMATS

MIXTURE_DIR = Path(__file__).resolve().parent.parent / "config" / "mixtures"
"""Where the shipped mixtures are."""


@dataclass
class MixtureSource:
    """One source of a mixture file."""

    name: str
    weight: float
    path: str
    format: str = "text"
    """The ``octo preprocess --format`` that makes this source."""


@dataclass
class Mixture:
    """A named, weighted list of sources; weights are fractions of tokens and sum to 1."""

    name: str
    description: str = ""
    sources: List[MixtureSource] = field(default_factory=list)

    def data_sources(self) -> List[DataSource]:
        """The sources as the recipe schema's ``DataSource`` list."""
        return [DataSource(name=s.name, weight=s.weight, path=s.path) for s in self.sources]


def mixture_names() -> List[str]:
    """Names of the shipped mixtures."""
    return sorted(p.stem for p in MIXTURE_DIR.glob("*.yaml"))


def _mixture_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"data.mixture file {path} does not exist")
        return path
    shipped = MIXTURE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name_or_path, mixture_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"unknown data.mixture '{name_or_path}'{hint}: use one of {', '.join(mixture_names())} or a YAML path"
    )


def _resolve(raw: dict, where: str) -> dict:
    """Interpolations (``${oc.env:...}``) resolved."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
    assert isinstance(resolved, dict)  # OmegaConf.create of a dict gives a DictConfig
    return resolved


def _source(item, index: int, where: str) -> MixtureSource:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: sources[{index}] must be a mapping with name, weight, format, path")
    unknown = set(item) - {"name", "weight", "path", "format"}
    if unknown:
        raise ConfigError(
            f"{where}: sources[{index}] has unknown key(s) {sorted(unknown)}; allowed: name, weight, format, path"
        )
    fmt = item.get("format", "text")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: sources[{index}] format={fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        weight = float(item.get("weight", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: sources[{index}] weight={item.get('weight')!r} is not a number") from None
    return MixtureSource(
        name=str(item.get("name", f"source{index}")), weight=weight, path=str(item.get("path") or ""), format=fmt
    )


def load_mixture(name_or_path: str) -> Mixture:
    """A shipped mixture by name, or a mixture YAML file, with paths resolved and weights checked."""
    path = _mixture_path(name_or_path)
    where = f"data.mixture={name_or_path}"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise ConfigError(f"{where}: {path} needs a non-empty 'sources' list")
    raw = _resolve(raw, where)
    sources = [_source(item, i, where) for i, item in enumerate(raw["sources"])]
    mixture = Mixture(name=path.stem, description=str(raw.get("description", "")), sources=sources)
    check_sources(mixture.data_sources(), where)
    return mixture


def check_sources(sources: List[DataSource], where: str = "data.sources") -> None:
    """Positive weights summing to 1, a path for each source, distinct names; ``ConfigError`` otherwise."""
    if not sources:
        raise ConfigError(f"{where} is empty: list {{name, weight, path}} sources")
    for i, src in enumerate(sources):
        if not src.weight > 0:
            raise ConfigError(f"{where}[{i}] ({src.name}) weight={src.weight} must be positive")
        if not src.path:
            raise ConfigError(f"{where}[{i}] ({src.name}) has no path: set it to an indexed-dataset prefix")
    names = [s.name for s in sources]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{where}: source name(s) {duplicated} appear more than once; names label audit rows")
    total = sum(s.weight for s in sources)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"{where} weights sum to {total:.6g}, they must sum to 1")


def blend_sources(data: DataConfig) -> List[DataSource]:
    """The sources a ``kind: blend`` data section reads: its mixture's, or its inline ``sources``."""
    mixture: Optional[str] = getattr(data, "mixture", None)
    if mixture:
        return load_mixture(mixture).data_sources()
    return list(data.sources)

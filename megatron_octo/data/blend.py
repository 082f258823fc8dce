"""A recipe's data mixture as Megatron-Core datasets: ``BlendedMegatronDatasetBuilder`` over ``GPTDataset``.

``build_blend(recipe, num_samples)`` returns ``BlendTokens``: item ``i`` is sample ``i`` of the blend in training
order, the ``seq_len + 1`` tokens that GPTDataset's ``tokens`` and ``labels`` (shifted by one) come from, as a
``torch.LongTensor``. The order is Megatron-Core's: its blending indices (each sample goes to the source furthest
below its weight) over each source's shuffled GPTDataset, seeded by ``train.seed``. Same recipe and seed, same
samples, on every rank and every run.

Ranks: Megatron-Core builds the index caches on rank 0, then (after a barrier on the default process group) the
other ranks load them; every rank must call ``build_blend``. Caches go to ``data.cache_dir`` (it must be visible
to all ranks), or beside each source when unset.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from megatron_octo.config.schema import DataSource, RecipeConfig
from megatron_octo.data.errors import DataError
from megatron_octo.data.mixtures import blend_sources
from megatron_octo.data.token_range import check_token_range
from megatron_octo.models.shapes import shape


@dataclass(frozen=True)
class TokenIds:
    """What GPTDataset reads from a tokenizer: vocabulary size, end-of-document id, pad id (-1: none, so no
    real token is ever masked as padding) and the identifiers that enter its cache key. Preprocessing already
    tokenized the data; training needs no tokenizer object."""

    vocab_size: int
    eod: int = -1
    pad: int = -1

    @property
    def unique_identifiers(self) -> "OrderedDict[str, object]":
        return OrderedDict(vocab_size=self.vocab_size, eod=self.eod)


class BlendTokens:
    """Indexable blend: ``self[i]`` is a ``[seq_len + 1]`` LongTensor, ``source_of(i)`` its source's index."""

    def __init__(self, dataset, sources: List[DataSource], seq_len: int) -> None:
        self.dataset, self.sources, self.seq_len = dataset, sources, seq_len

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        sample = self.dataset[int(index)]
        return torch.cat([sample["tokens"], sample["labels"][-1:]]).long()

    def source_of(self, index: int) -> int:
        """Which source (position in ``sources``) sample ``index`` comes from."""
        return int(self.dataset.dataset_index[int(index)])


def _check_files(sources: List[DataSource]) -> None:
    """Every source's .bin and .idx exist; else one line naming all the missing sources."""
    missing = [
        src for src in sources if not src.path or not all(Path(src.path + sfx).is_file() for sfx in (".bin", ".idx"))
    ]
    if len(missing) == 1:
        src = missing[0]
        gone = next((f"{src.path}{x}" for x in (".bin", ".idx") if not Path(f"{src.path}{x}").is_file()), src.path)
        raise DataError(
            f"data source '{src.name}': {gone} not found: make it with `octo "
            f"preprocess --output-prefix {src.path}` or point OCTO_DATA / the path at it"
        )
    if missing:
        listed = ", ".join(f"'{s.name}' ({s.path})" for s in missing)
        raise DataError(
            f"{len(missing)} of {len(sources)} data sources have no .bin/.idx: {listed}; make them "
            "with `octo preprocess --output-prefix PATH` or point OCTO_DATA / the paths at them"
        )


def _token_ids(recipe: RecipeConfig) -> TokenIds:
    eod = -1
    if recipe.data.tokenizer:
        from megatron_octo.data.tokenizer import load_tokenizer

        eod = load_tokenizer(recipe.data.tokenizer).eos_token_id
    return TokenIds(vocab_size=shape(recipe.model).vocab_size, eod=-1 if eod is None else int(eod))


def dataset_config(recipe: RecipeConfig, sources: List[DataSource]):
    """The ``GPTDatasetConfig`` of a recipe's blend (Megatron-Core's defaults for masks: none reset)."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    d = recipe.data
    return GPTDatasetConfig(
        random_seed=recipe.train.seed,
        sequence_length=recipe.train.seq_len,
        blend=([s.path for s in sources], [float(s.weight) for s in sources]),
        split=d.split,
        path_to_cache=d.cache_dir,
        tokenizer=_token_ids(recipe),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )


@contextlib.contextmanager
def _process_group_for_build(needed: bool):
    """A temporary world of one (gloo, in-memory store) when none exists and caches are written.

    Megatron-Core 0.16.1's BlendedDataset calls ``torch.distributed.get_rank()`` unguarded when it writes a new
    cache, which fails without a process group; the loop always has one, a single-process audit may not.
    """
    import torch.distributed as dist

    if not needed or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def build_blend(recipe: RecipeConfig, num_samples: int, sources: Optional[List[DataSource]] = None) -> BlendTokens:
    """The first ``num_samples`` training samples of the recipe's mixture (every rank must call this)."""
    return build_blend_splits(recipe, num_samples, 0, sources)[0]


def valid_share(split: str) -> float:
    """The validation share of a Megatron split string (``98,1,1`` -> 1.0; ``100,0,0`` or ``100`` -> 0.0)."""
    parts = [float(x) for x in split.replace("/", ",").split(",")]
    return parts[1] if len(parts) > 1 else 0.0


def build_blend_splits(
    recipe: RecipeConfig, num_samples: int, valid_samples: int, sources: Optional[List[DataSource]] = None
) -> Tuple[BlendTokens, Optional[BlendTokens]]:
    """The training blend and, when ``valid_samples`` > 0 and ``data.split`` holds documents out for validation,
    the validation blend of ``valid_samples`` samples (the same mixture over each source's validation documents,
    as Megatron-LM builds it); otherwise None. The training blend does not depend on ``valid_samples``."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    sources = list(sources if sources is not None else blend_sources(recipe.data))
    _check_files(sources)
    check_token_range(shape(recipe.model).vocab_size, sources, recipe.data.tokenizer)
    config = dataset_config(recipe, sources)
    valid_samples = int(valid_samples) if valid_share(recipe.data.split) > 0 else 0
    builder = BlendedMegatronDatasetBuilder(GPTDataset, [int(num_samples), valid_samples, 0], lambda: True, config)
    with _process_group_for_build(recipe.data.cache_dir is not None):
        train, valid, _ = builder.build()
    seq = recipe.train.seq_len
    return BlendTokens(train, sources, seq), (BlendTokens(valid, sources, seq) if valid is not None else None)

"""Blends through Megatron-Core: items are the seq_len + 1 tokens of GPTDataset samples in training order, from
the source the blend names; the same seed gives the same order; every rank builds the same dataset."""

from __future__ import annotations

import multiprocessing
import os

import numpy
import pytest
import torch

from megatron_octo.config import load_recipe
from megatron_octo.data.blend import build_blend
from megatron_octo.data.errors import DataError
from megatron_octo.training.loop import make_dataset
from tests.data.conftest import SPAN, write_source


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return [write_source(root / name, k) for k, name in enumerate(["web", "qa", "chat"])]


def recipe_for(sources, *overrides):
    weights = (0.5, 0.3, 0.2)
    spec = ", ".join(f"{{name: s{k}, weight: {w}, path: '{p}'}}" for k, (p, w) in enumerate(zip(sources, weights)))
    return load_recipe("tiny-cpu", ["data.kind=blend", f"data.sources=[{spec}]", "model.vocab_size=3000",
                                    "train.seq_len=32", *overrides])


def test_items_are_gpt_samples_from_the_named_source(sources, tmp_path):
    blend = build_blend(recipe_for(sources, f"data.cache_dir={tmp_path}"), 200)
    assert len(blend) >= 200
    for i in range(200):
        item = blend[i]
        assert item.dtype == torch.int64 and item.shape == (33,)
        raw = blend.dataset[i]
        assert torch.equal(item[:-1], raw["tokens"]) and torch.equal(item[1:], raw["labels"])
        assert set((item // SPAN).tolist()) == {blend.source_of(i)}
    # weights 0.5 / 0.3 / 0.2 over 200 samples: 100 / 60 / 40 (Megatron's blending is exact on such counts)
    counts = numpy.bincount([blend.source_of(i) for i in range(200)], minlength=3)
    assert counts.tolist() == [100, 60, 40]


def samples(blend, n=64):
    return torch.stack([blend[i] for i in range(n)])


def test_same_seed_same_order_other_seed_other_order(sources, tmp_path):
    a = samples(build_blend(recipe_for(sources, f"data.cache_dir={tmp_path / 'a'}"), 128))
    b = samples(build_blend(recipe_for(sources, f"data.cache_dir={tmp_path / 'b'}"), 128))
    c = samples(build_blend(recipe_for(sources, f"data.cache_dir={tmp_path / 'c'}", "train.seed=99"), 128))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))  # same cache keys


def test_make_dataset_covers_the_stage(sources):
    recipe = recipe_for(sources, "train.iters=5", "train.global_batch=8")
    dataset = make_dataset(recipe)  # no cache_dir: Megatron-Core caches beside the sources
    assert len(dataset) >= 5 * 8 and dataset[39].shape == (33,)


def test_synthetic_is_unchanged():
    dataset = make_dataset(load_recipe("tiny-cpu"))
    assert type(dataset).__name__ == "SyntheticTokens" and dataset[0].shape == (65,)


def test_missing_source_names_it(sources, tmp_path):
    recipe = load_recipe("tiny-cpu", ["data.kind=blend", f"data.sources=[{{name: gone, weight: 1.0, path: "
                                      f"'{tmp_path}/gone'}}]"])
    with pytest.raises(DataError, match=r"data source 'gone': .*gone.bin not found"):
        build_blend(recipe, 10)


def _rank(rank: int, world: int, init: str, sources, cache: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        blend = build_blend(recipe_for(sources, f"data.cache_dir={cache}"), 96)
        torch.save(samples(blend, 96), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_rank_builds_the_same_blend_over_gloo(sources, tmp_path):
    # Rank 0 is this process (Megatron-Core builds the caches there first), rank 1 a spawned process.
    import torch.distributed as dist

    init, cache = f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "cache")
    child = multiprocessing.get_context("spawn").Process(target=_rank, args=(1, 2, init, sources, cache,
                                                                             str(tmp_path)))
    child.start()
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=2)
    try:
        rank0 = samples(build_blend(recipe_for(sources, f"data.cache_dir={cache}"), 96), 96)
    finally:
        dist.destroy_process_group()
    child.join(timeout=120)
    assert child.exitcode == 0
    single = samples(build_blend(recipe_for(sources, f"data.cache_dir={tmp_path / 'single'}"), 96), 96)
    assert torch.equal(rank0, single)
    assert torch.equal(torch.load(tmp_path / "rank1.pt"), single)


def test_validation_split_holds_out_documents_and_leaves_training_unchanged(sources, tmp_path):
    from megatron_octo.data.blend import build_blend_splits

    recipe = recipe_for(sources, f"data.cache_dir={tmp_path}", "data.split=80,20,0")
    train, valid = build_blend_splits(recipe, 128, 48)
    assert valid is not None and len(valid) >= 48
    for k in range(3):  # per source: the validation GPTDataset reads other documents than the training one
        assert set(train.dataset.datasets[k].indices.tolist()).isdisjoint(valid.dataset.datasets[k].indices.tolist())
    counts = numpy.bincount([valid.source_of(i) for i in range(48)], minlength=3)
    assert counts.tolist() == [24, 14, 10]  # the blend's weights 0.5 / 0.3 / 0.2 over 48 samples, rounded
    assert torch.equal(samples(train), samples(build_blend(recipe, 128)))
    _, none = build_blend_splits(recipe_for(sources, f"data.cache_dir={tmp_path / 'b'}"), 128, 48)  # 100,0,0
    assert none is None

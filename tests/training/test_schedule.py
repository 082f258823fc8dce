"""The LR schedules of the shipped OctoThinker recipes, run by Megatron-Core's OptimizerParamScheduler.

Expected values are RECIPE.md's: 3B stable 2e-5 constant over 50,000 steps; 3B decay cosine from 2e-5 to 10% of
it over 5,000 steps, so halfway it is 2e-6 + (2e-5 - 2e-6) / 2 = 1.1e-5.
"""

import pytest
import torch
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_octo.config import load_recipe, train_iters
from megatron_octo.training.build import scheduler_args


def lr_at(recipe_name, steps):
    recipe = load_recipe(recipe_name)
    iters = train_iters(recipe)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    scheduler = OptimizerParamScheduler(optimizer, **scheduler_args(recipe, iters))
    out, done = {}, 0
    for step in sorted(steps):
        scheduler.step(increment=step - done)
        done = step
        out[step] = optimizer.param_groups[0]["lr"]
    return iters, out


def test_3b_stable_is_constant_for_50k_steps():
    iters, lrs = lr_at("octothinker-3b-stable", [0, 25_000, 49_999])
    assert iters == 50_000
    assert lrs == {0: pytest.approx(2e-5), 25_000: pytest.approx(2e-5), 49_999: pytest.approx(2e-5)}


@pytest.mark.parametrize("branch", ["long", "short", "hybrid"])
def test_3b_decay_is_cosine_to_ten_percent(branch):
    iters, lrs = lr_at(f"octothinker-3b-decay-{branch}", [0, 2_500, 5_000])
    assert iters == 5_000
    assert lrs[0] == pytest.approx(2e-5)
    assert lrs[2_500] == pytest.approx(1.1e-5)
    assert lrs[5_000] == pytest.approx(2e-6)


@pytest.mark.parametrize("size, lr", [("1b", 5e-5), ("3b", 2e-5), ("8b", 1e-5)])
def test_recipe_numbers_per_size(size, lr):
    stable = load_recipe(f"octothinker-{size}-stable")
    decay = load_recipe(f"octothinker-{size}-decay-long")
    assert stable.schedule.lr == lr and stable.schedule.style == "constant" and stable.schedule.warmup_iters == 0
    assert decay.schedule.lr == lr and decay.schedule.min_lr == pytest.approx(lr / 10)
    for recipe in (stable, decay):
        assert (recipe.train.seq_len, recipe.train.global_batch) == (8192, 512)
        assert recipe.optimizer.weight_decay == 0.1 and recipe.optimizer.name == "adam"
        assert recipe.model.preset == {"1b": "llama-3.2-1b", "3b": "llama-3.2-3b", "8b": "llama-3.1-8b"}[size]
    assert stable.data.mixture == "stable"
    assert {load_recipe(f"octothinker-{size}-decay-{b}").data.mixture for b in ("long", "short", "hybrid")} == {
        "decay-long", "decay-short", "decay-hybrid"}

"""Periodic greedy validation of the policy during RL, zero-shot with the RL template (RECIPE.md), through the
evaluation machinery with the rollout engines as its generator (they hold the current weights).

Sharded: rank 0 lists every (prompt, stop strings) of the validation benchmarks and broadcasts the list once;
each rollout engine generates its share (every ``count``-th prompt from its ``index``), the completions are
gathered on rank 0 once, and rank 0 runs ``eval.run_eval`` on them (``ReplayGenerator``), so scores, reports and
prediction files are those of a rank-0 validation (tests/rl/test_validation.py compares the two) while every
engine works. The accuracies then reach every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.distributed as dist

from megatron_octo.rl.prompts import encode

Request = Tuple[str, Tuple[str, ...]]
"""(prompt text, stop strings)."""


class EngineGenerator:
    """The ``generate(prompts, ...)`` interface of ``megatron_octo.eval`` on top of a rollout engine."""

    name = "rollout-engine"

    def __init__(self, engine, tokenizer):
        self.engine, self.tokenizer = engine, tokenizer

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 1024,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int = 0,
        progress=None,
    ) -> List[str]:
        if not prompts:
            return []
        ids = [encode(self.tokenizer, p) for p in prompts]
        out = self.engine.generate(
            ids, n=1, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, stop=stop, seed=seed
        )
        if progress:
            progress(len(prompts))
        return [group[0].text for group in out]


class ReplayGenerator:
    """``generate`` answering from completions made earlier (by the engines, for exactly these requests)."""

    name = "rollout-engine"

    def __init__(self, completions: Mapping[Request, str]):
        self.completions = completions

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 1024,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int = 0,
        progress=None,
    ) -> List[str]:
        out = [self.completions[(p, tuple(stop))] for p in prompts]
        if progress:
            progress(len(prompts))
        return out


def validation_items(recipe) -> Optional[List[Dict[str, str]]]:
    """The held-out problems of ``rl.validation.path`` as eval items ({question, answer}), or None (benchmarks)."""
    from megatron_octo.rl.prompts import read_problems

    path = recipe.rl.validation.path
    return None if path is None else read_problems(path, "rl.validation.path")


def validation_requests(recipe, items: Optional[List[Dict[str, str]]] = None) -> List[Request]:
    """Every distinct (prompt, stop strings) the validation benchmarks (or ``items``) ask for, in order."""
    from megatron_octo.eval.runner import _prepare_tasks

    v = recipe.rl.validation
    tasks = _prepare_tasks(
        v.benchmarks, items, v.data_dir, "local", None, v.limit, True, recipe.rl.prompts.template, None, "math"
    )
    seen, out = set(), []
    for task in tasks:
        for item in task.items:
            request = (task.prompt.render(item.question), tuple(task.prompt.stop))
            if request not in seen:
                seen.add(request)
                out.append(request)
    return out


def generate_share(
    engine, tokenizer, requests: Sequence[Request], index: int, count: int, max_new_tokens: int
) -> Dict[Request, str]:
    """Engine ``index`` of ``count``: greedy completions of its share of ``requests`` (grouped by stop strings)."""
    mine = list(requests[index::count])
    generator = EngineGenerator(engine, tokenizer)
    lockstep = getattr(engine, "lockstep", False)  # engines that step together make the same calls, even empty
    out: Dict[Request, str] = {}
    for stop in dict.fromkeys(s for _, s in (requests if lockstep else mine)):
        prompts = [p for p, s in mine if s == stop]
        if lockstep and not prompts:
            engine.generate([], n=1, temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, stop=stop, seed=0)
        for p, text in zip(prompts, generator.generate(prompts, max_new_tokens=max_new_tokens, stop=stop)):
            out[(p, stop)] = text
    return out


def validate_policy(
    recipe,
    ctx,
    engine,
    tokenizer,
    run_dir: Path,
    step: int,
    log,
    engine_index: Optional[int] = None,
    engine_count: Optional[int] = None,
) -> Dict[str, float]:
    """Accuracy (%) per validation benchmark, ``val_<name>`` (``val_custom`` for ``rl.validation.path``), on every
    rank (collective over the world). Engines are numbered ``engine_index`` of ``engine_count`` (default: one per
    data-parallel replica)."""
    from megatron_octo.eval import run_eval

    v = recipe.rl.validation
    index = ctx.dp_rank if engine_index is None else engine_index
    count = ctx.dp if engine_count is None else engine_count
    items = validation_items(recipe) if ctx.is_main else None
    box: List[Any] = [validation_requests(recipe, items) if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    share = generate_share(engine, tokenizer, box[0], index, count, v.max_new_tokens) if engine is not None else {}
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.gather_object(share, gathered if ctx.is_main else None, dst=0)
    result: List[Any] = [None]
    if ctx.is_main:
        completions = {k: t for part in gathered for k, t in part.items()}
        results = run_eval(
            None,
            v.benchmarks,
            items=items,
            data_dir=v.data_dir,
            zero_shot=True,
            template=recipe.rl.prompts.template,
            generator=ReplayGenerator(completions),
            max_new_tokens=v.max_new_tokens,
            limit=v.limit,
            output_dir=str(run_dir / "validation" / f"step_{step:07d}"),
            overwrite=True,
            show_progress=False,
            log=lambda line: None,
        )
        accuracies = {f"val_{name}": r["accuracy"] for name, r in results["benchmarks"].items()}
        log(f"[octo rl] validation at step {step}: " + ", ".join(f"{k[4:]} {a:.1f}%" for k, a in accuracies.items()))
        result[0] = accuracies
    dist.broadcast_object_list(result, src=0)
    return result[0]

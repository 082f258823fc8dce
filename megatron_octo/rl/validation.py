"""Periodic greedy validation of the policy during RL, zero-shot with the RL template (RECIPE.md), through the
evaluation machinery with the rollout engine as its generator (the engine holds the current weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch.distributed as dist

from megatron_octo.rl.engines import RolloutEngine
from megatron_octo.rl.prompts import encode


class EngineGenerator:
    """The ``generate(prompts, ...)`` interface of ``megatron_octo.eval`` on top of a rollout engine."""

    name = "rollout-engine"

    def __init__(self, engine: RolloutEngine, tokenizer):
        self.engine, self.tokenizer = engine, tokenizer

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 1024, stop: Sequence[str] = (),
                 temperature: float = 0.0, seed: int = 0, progress=None) -> List[str]:
        ids = [encode(self.tokenizer, p) for p in prompts]
        out = self.engine.generate(ids, n=1, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens,
                                   stop=stop, seed=seed)
        if progress:
            progress(len(prompts))
        return [group[0].text for group in out]


def validate_policy(recipe, ctx, engine: RolloutEngine, tokenizer, run_dir: Path, step: int, log) -> Dict[str, float]:
    """Accuracy (%) per validation benchmark, ``val_<name>``, computed on rank 0 and shared with every rank."""
    from megatron_octo.eval import run_eval

    v = recipe.rl.validation
    box: List[Optional[Dict[str, float]]] = [None]
    if ctx.is_main:
        engine.wake_up()
        results = run_eval(None, v.benchmarks, data_dir=v.data_dir, zero_shot=True,
                           template=recipe.rl.prompts.template, generator=EngineGenerator(engine, tokenizer),
                           max_new_tokens=v.max_new_tokens, limit=v.limit,
                           output_dir=str(run_dir / "validation" / f"step_{step:07d}"), overwrite=True,
                           show_progress=False, log=lambda line: None)
        engine.sleep()
        accuracies = {f"val_{name}": r["accuracy"] for name, r in results["benchmarks"].items()}
        log(f"[octo rl] validation at step {step}: " + ", ".join(f"{k[4:]} {a:.1f}%" for k, a in accuracies.items()))
        box[0] = accuracies
    dist.broadcast_object_list(box, src=0)
    result = box[0]
    assert result is not None  # rank 0 filled it before the broadcast
    return result

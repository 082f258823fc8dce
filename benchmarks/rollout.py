"""Rollout benchmark: generated tokens/s of a rollout engine, and the time to sync the trainer's weights into it,
next to the baseline a disk hand-off costs (save_pretrained + a fresh engine from that directory), in one run.

The trainer is a single-process Megatron-Core GPTModel of the recipe's shape (random layout-invariant weights);
prompts are random token ids of ``--prompt-tokens``; every response runs to ``--max-tokens`` (no EOS stop), so
tokens/s counts ``prompts x n x max_tokens``.

    python benchmarks/rollout.py --recipe tiny-cpu-grpo --engine transformers            # CPU smoke
    python benchmarks/rollout.py --recipe octothinker-1b-stable --engine vllm \
        --prompts 64 --n 8 --max-tokens 1024                                              # one H100/H200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


class _Vocab:
    """The few tokenizer fields an engine reads, for a model without a tokenizer (random prompts)."""

    def __init__(self, vocab_size: int):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = None, vocab_size + 1, 0  # EOS never sampled

    def decode(self, ids, skip_special_tokens=True) -> str:
        return " ".join(map(str, ids))


def _engine(kind: str, recipe, tokenizer, model_dir: Path, device: torch.device):
    from megatron_octo.rl.engines import TransformersEngine, VLLMRolloutEngine
    from megatron_octo.rl.setup import _hf_config

    if kind == "transformers":
        return TransformersEngine(_hf_config(recipe, tokenizer), tokenizer, device=str(device))
    return VLLMRolloutEngine(str(model_dir), dtype="bfloat16" if device.type == "cuda" else "float32",
                             seed=0, gpu_memory_utilization=0.5, max_model_len=4096,
                             sleep_between_rollouts=False, device=device)


def _generate_rate(engine, prompts, n: int, max_tokens: int) -> float:
    start = time.perf_counter()
    out = engine.generate(prompts, n=n, temperature=1.0, top_p=1.0, max_tokens=max_tokens, seed=0)
    seconds = time.perf_counter() - start
    return sum(len(s.token_ids) for group in out for s in group) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tiny-cpu-grpo")
    parser.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    from megatron_octo import parallel
    from megatron_octo.config import load_recipe
    from megatron_octo.rl.sync import gather_hf_state
    from megatron_octo.training.build import build

    recipe = load_recipe(args.recipe, ["checkpoint.save=false", "train.iters=1", *args.overrides])
    ctx = parallel.initialize(recipe.parallel, seed=0)
    try:
        parts = build(recipe, ctx, 1)
        tokenizer = _Vocab(recipe.model.vocab_size)
        gen = torch.Generator().manual_seed(0)
        prompts = torch.randint(3, recipe.model.vocab_size, (args.prompts, args.prompt_tokens), generator=gen).tolist()
        with tempfile.TemporaryDirectory() as tmp:
            from transformers import AutoConfig, AutoModelForCausalLM

            from megatron_octo.rl.setup import _hf_config

            state = gather_hf_state(parts.model, recipe.model, ctx.pgs.mp)
            disk_start = time.perf_counter()  # baseline: hand the weights over through a directory
            hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(**_hf_config(recipe, tokenizer)))
            hf.load_state_dict(state, strict=False)
            hf.save_pretrained(tmp)
            engine = _engine(args.engine, recipe, tokenizer, Path(tmp), ctx.device)
            if args.engine == "transformers":
                engine.model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).to(ctx.device).eval()
            disk_s = time.perf_counter() - disk_start
            sync_start = time.perf_counter()  # ours: gather the shards and load them in memory
            engine.load_weights(gather_hf_state(parts.model, recipe.model, ctx.pgs.mp).items())
            sync_s = time.perf_counter() - sync_start
            _generate_rate(engine, prompts[:1], 1, 4)  # warm-up
            rate = _generate_rate(engine, prompts, args.n, args.max_tokens)
            engine.shutdown()
        print(f"model {recipe.model.preset} ({sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M parameters), "
              f"engine {args.engine}, device {ctx.device}")
        print(f"weight sync, in memory (ours)        : {sync_s:8.3f} s")
        print(f"weight hand-off through disk (base.) : {disk_s:8.3f} s   ({disk_s / sync_s:.1f}x ours)")
        print(f"generation: {args.prompts} prompts x {args.n} samples x <= {args.max_tokens} tokens: "
              f"{rate:,.0f} generated tokens/s")
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main()

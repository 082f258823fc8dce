"""Rollout benchmark, in one run on one model: the streamed weight sync (``rl.sync.WeightSync``) against the
previous host-gather path (``rl.sync.gather_hf_state``: fp32 host copies, the whole model assembled), generation
tokens/s of the engine, and the padding share of the trainer's passes with and without token-budget micro-batches
on a long-tailed response-length distribution.

Sync: the trainer is a bare Megatron-Core GPTModel of the recipe's shape (``--layers`` fewer layers allowed; no
optimizer, so the figures are the sync's own), the engine a transformers model in ``--engine-dtype`` (or vLLM).
Each path's peak is measured while it runs: host RSS above the value before (sampled every 2 ms), tensor bytes
allocated and alive (``utils.memprobe.TensorBytesProbe``) and, on CUDA, ``max_memory_allocated``. The new path
runs first, so memory the old one leaves to the allocator cannot flatter it; both must leave the engine with the
same bytes (checked by hashing every engine tensor).

Padding: MATH8K's prompts (``--prompts-file``) under the recipe's template, lengths counted as UTF-8 bytes / 4
(about Llama-3's tokens per byte for English and LaTeX); responses drawn log-normal (median ``--median-response``,
sigma ``--sigma``) and cut at the recipe's response cap: the long tail of RL math responses. Each data-parallel
rank's share of a step (``prompts_per_step x n / --dp``) is laid out as the trainer does: ``train.micro_batch``
responses padded to the step's longest, or ``rl.max_tokens_per_micro_batch`` token-budget micro-batches.

    OMP_NUM_THREADS=2 python benchmarks/rollout.py --recipe octothinker-3b-grpo --layers 2        # CPU (3B shape)
    python benchmarks/rollout.py --recipe octothinker-3b-grpo --engine vllm                        # one GPU
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch


class _Vocab:
    """The few tokenizer fields an engine reads, for a model without a tokenizer (random prompts)."""

    def __init__(self, vocab_size: int):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = None, vocab_size + 1, 0  # EOS never sampled

    def decode(self, ids, skip_special_tokens=True) -> str:
        return " ".join(map(str, ids))


def _trainer(recipe, ctx):
    """The recipe's GPTModel for this rank, layout-invariant random weights, no DDP / optimizer."""
    from megatron_octo.models.gpt import build_gpt_model, resolve_spec, transformer_config
    from megatron_octo.training.build import resolve_dtype
    from megatron_octo.training.init import initialize_invariant

    use_te = resolve_spec(recipe.model.spec)
    dtype = resolve_dtype(recipe.precision.dtype, ctx.device)
    tcfg = transformer_config(recipe.model, recipe.parallel, dtype, use_cpu_initialization=True)
    model = build_gpt_model(recipe.model, tcfg, ctx.pgs, pre_process=ctx.is_first_stage,
                            post_process=ctx.is_last_stage, use_te=use_te)
    initialize_invariant([model], seed=0, std=recipe.model.init_method_std, num_layers=recipe.model.num_layers,
                         vocab_size=recipe.model.vocab_size)
    return [model.to(device=ctx.device, dtype=dtype)]


def _engine(kind: str, recipe, dtype: torch.dtype, device: torch.device, workdir: Path):
    from megatron_octo.rl.engines import TransformersEngine, VLLMRolloutEngine
    from megatron_octo.rl.setup import _engine_dir, _hf_config

    tokenizer = _Vocab(recipe.model.vocab_size)
    if kind == "transformers":
        return TransformersEngine(_hf_config(recipe, tokenizer), tokenizer, device=str(device), dtype=dtype)
    from transformers import PreTrainedTokenizerFast  # vLLM needs a tokenizer on disk: a byte-free stand-in
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(recipe.model.vocab_size)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))
    model_dir = _engine_dir(workdir / "engine", _hf_config(recipe, tokenizer), tok)
    return VLLMRolloutEngine(str(model_dir), dtype=str(dtype).removeprefix("torch."), seed=0,
                             gpu_memory_utilization=0.5, max_model_len=4096, sleep_between_rollouts=False,
                             device=device)


def _engine_digest(engine) -> str:
    """A hash of every engine tensor's bytes (transformers engine), to check both paths deliver the same."""
    if not hasattr(engine, "model"):
        return "n/a (vLLM holds its weights in its worker)"
    h = hashlib.sha256()
    for name, t in engine.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _measure(fn, device: torch.device) -> dict:
    from megatron_octo.utils.memprobe import RSSSampler, TensorBytesProbe

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_dev = torch.cuda.memory_allocated()
    with RSSSampler() as rss, TensorBytesProbe(python=False) as probe:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    out = {"seconds": seconds, "host_rss_peak": rss.peak_above_base, "tensor_peak": probe.peak_tensor_bytes}
    if device.type == "cuda":
        out["device_peak"] = torch.cuda.max_memory_allocated() - base_dev
    return out


def bench_sync(recipe, ctx, engine, dtype: torch.dtype, bucket_mb: int) -> dict:
    from megatron_octo.rl.sync import WeightSync, gather_hf_state

    chunks = _trainer(recipe, ctx)
    sync = WeightSync(recipe.model, ctx.pgs.mp, dtype, bucket_bytes=bucket_mb << 20)
    sync(chunks, engine)  # warm-up: the plan (metadata exchange) is made once per run
    new = _measure(lambda: sync(chunks, engine), ctx.device)
    new["digest"] = _engine_digest(engine)

    def old_path():
        state = gather_hf_state(chunks, recipe.model, ctx.pgs.mp)
        engine.load_weights(state.items())
        state.clear()

    old = _measure(old_path, ctx.device)
    old["digest"] = _engine_digest(engine)
    params = sum(p.numel() for c in chunks for p in c.parameters())
    return {"new": new, "old": old, "trainer_parameters": params}


def bench_generation(engine, vocab: int, prompts: int, n: int, prompt_tokens: int, max_tokens: int) -> float:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (prompts, prompt_tokens), generator=g).tolist()
    engine.generate(ids[:1], n=1, temperature=1.0, top_p=1.0, max_tokens=2, seed=0)  # warm-up
    start = time.perf_counter()
    out = engine.generate(ids, n=n, temperature=1.0, top_p=1.0, max_tokens=max_tokens, seed=0)
    return sum(len(s.token_ids) for group in out for s in group) / (time.perf_counter() - start)


def bench_padding(recipe, prompts_file: Path, dp: int, median: float, sigma: float, budget: int) -> dict:
    """Padding share of one data-parallel rank's step, padded vs token-budget micro-batches."""
    from megatron_octo.eval.prompts import zero_shot_prompt
    from megatron_octo.rl import rollouts as ro

    rl, r = recipe.rl, recipe.rl.rollout
    template = zero_shot_prompt(rl.prompts.template)
    rows = [json.loads(line) for line in prompts_file.read_text().splitlines() if line.strip()]
    g = torch.Generator().manual_seed(0)
    per_rank = rl.prompts_per_step // dp
    chosen = torch.randperm(len(rows), generator=g)[:per_rank].tolist()
    cap = r.max_response_tokens
    tokens, prompt_lens, lps, truncated = [], [], [], 0
    for i in chosen:
        p = max(1, len(template.render(rows[i]["prompt"]).encode()) // 4)
        for _ in range(r.n):
            length = int(torch.empty(1).log_normal_(torch.tensor(median).log().item(), sigma, generator=g).item())
            truncated += length >= cap
            length = max(1, min(cap, length))
            tokens.append([5] * (p + length))
            prompt_lens.append(p)
            lps.append([0.0] * length)
    n = len(tokens)
    rollouts = ro.Rollouts(tokens, prompt_lens, lps, [0.0] * n, [False] * n, [0.0] * n)
    minis = rl.prompts_per_step // rl.mini_batch_prompts
    cpu = torch.device("cpu")
    padded = ro.step_batches(rollouts, minis, recipe.train.micro_batch, None, 0, cpu)
    packed = ro.step_batches(rollouts, minis, recipe.train.micro_batch, budget, 0, cpu)
    count = lambda m: sum(mb.tokens.numel() for mini in m for mb in mini)  # noqa: E731
    lengths = sorted(len(t) - p for t, p in zip(tokens, prompt_lens))
    return {"responses": n, "median_response": lengths[n // 2], "p99_response": lengths[int(n * 0.99)],
            "truncated": truncated / n, "padded_share": ro.padding_share(rollouts, padded),
            "budget_share": ro.padding_share(rollouts, packed), "padded_tokens": count(padded),
            "budget_tokens": count(packed), "padded_micro_batches": sum(len(m) for m in padded),
            "budget_micro_batches": sum(len(m) for m in packed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="octothinker-3b-grpo")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the recipe's)")
    parser.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--engine-dtype", default="bfloat16", help="the engine's dtype (vLLM on GPU: bfloat16)")
    parser.add_argument("--bucket-mb", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=4, help="generation: prompts")
    parser.add_argument("--n", type=int, default=2, help="generation: samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16, help="generation: tokens per sample")
    parser.add_argument("--prompts-file", default=os.path.join(os.environ.get("OCTO_DATA", "../shared/data"),
                                                               "rl", "math8k_train.jsonl"))
    parser.add_argument("--dp", type=int, default=8, help="padding: data-parallel ranks sharing a step")
    parser.add_argument("--median-response", type=float, default=700.0)
    parser.add_argument("--sigma", type=float, default=0.9)
    parser.add_argument("--max-tokens-per-micro-batch", type=int, default=None,
                        help="padding: token budget (default: the recipe's, else 16384)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    import tempfile

    from megatron_octo import parallel
    from megatron_octo.config import load_recipe

    extra = [f"model.num_layers={args.layers}"] if args.layers else []
    recipe = load_recipe(args.recipe, ["checkpoint.save=false", "train.iters=1", "parallel.distributed_optimizer=false",
                                       "parallel.overlap_param_gather=false", "parallel.overlap_grad_reduce=false",
                                       *extra, *args.overrides])
    ctx = parallel.initialize(recipe.parallel, seed=0)
    dtype = getattr(torch, args.engine_dtype)
    try:
        budget = args.max_tokens_per_micro_batch or recipe.rl.max_tokens_per_micro_batch or 16384
        pad = bench_padding(recipe, Path(args.prompts_file), args.dp, args.median_response, args.sigma, budget)
        with tempfile.TemporaryDirectory() as tmp:
            leader = torch.distributed.get_rank(ctx.pgs.mp) == 0
            engine = _engine(args.engine, recipe, dtype, ctx.device, Path(tmp)) if leader else None
            sync = bench_sync(recipe, ctx, engine, dtype, args.bucket_mb)
            rate = 0.0
            if engine is not None:
                rate = bench_generation(engine, recipe.model.vocab_size, args.prompts, args.n, args.prompt_tokens,
                                        args.max_tokens)
                engine.shutdown()
        if ctx.is_main:
            _report(args, recipe, ctx, sync, rate, pad, budget)
    finally:
        parallel.destroy(ctx)


def _report(args, recipe, ctx, sync, rate, pad, budget) -> None:
    gib = 1 << 30
    new, old = sync["new"], sync["old"]
    m = recipe.model
    print(f"model: {recipe.model.preset} shape (hidden {m.hidden_size}, vocab {m.vocab_size}), {m.num_layers} layers, "
          f"{sync['trainer_parameters'] / 1e9:.2f}B trainer parameters; engine {args.engine} in {args.engine_dtype} "
          f"on {ctx.device}; bucket {args.bucket_mb} MiB")
    print(f"{'weight sync':28s} {'new (streamed)':>16s} {'old (host gather)':>18s} {'new/old':>8s}")
    rows = [("time (s)", "seconds", 1.0), ("peak host RSS (GiB)", "host_rss_peak", gib),
            ("peak tensor bytes (GiB)", "tensor_peak", gib)]
    if "device_peak" in new:
        rows.append(("peak device memory (GiB)", "device_peak", gib))
    for label, key, unit in rows:
        a, b = new[key] / unit, old[key] / unit
        print(f"{label:28s} {a:16.3f} {b:18.3f} {a / b if b else float('nan'):8.1%}")
    same = new["digest"] == old["digest"]
    print(f"engine weights after each path: {new['digest']} / {old['digest']} ({'identical' if same else 'DIFFER'})")
    print(f"generation: {args.prompts} prompts x {args.n} samples x {args.max_tokens} tokens: {rate:,.1f} tokens/s")
    print(f"padding, one of {args.dp} DP ranks' step ({pad['responses']} responses; median {pad['median_response']}, "
          f"p99 {pad['p99_response']} tokens, {pad['truncated']:.1%} at the {recipe.rl.rollout.max_response_tokens}"
          f"-token cap):")
    print(f"  train.micro_batch={recipe.train.micro_batch}, padded to the step's longest: "
          f"{pad['padded_share']:.1%} padding, {pad['padded_tokens']:,} tokens in {pad['padded_micro_batches']} "
          "micro-batches")
    print(f"  token budget {budget}: {pad['budget_share']:.1%} padding, {pad['budget_tokens']:,} tokens in "
          f"{pad['budget_micro_batches']} micro-batches ({pad['budget_tokens'] / pad['padded_tokens']:.1%} of padded)")


if __name__ == "__main__":
    main()

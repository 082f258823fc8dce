"""Training throughput of a recipe: megatron-octo (Megatron-Core) next to a plain transformers + AdamW loop.

Both train the recipe's model shape on the same synthetic batches with the same global batch, sequence length
and precision, on this process's device (one GPU, or the CPU). Prints tokens/s for both and MFU where the
device's peak is known.

    python benchmarks/train_throughput.py --recipe tiny-cpu --steps 20
    python benchmarks/train_throughput.py --recipe octothinker-1b-stable --steps 20 train.global_batch=8 \
        train.seq_len=4096 data.kind=synthetic     # on one H100/H200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from megatron_octo.config import load_recipe
from megatron_octo.training.build import resolve_dtype
from megatron_octo.training.flops import mfu, peak_flops


def megatron_tokens_per_s(recipe, warmup: int) -> float:
    from megatron_octo import parallel
    from megatron_octo.training.loop import run_training

    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            run_training(recipe, Path(run_dir), ctx)
            import json

            records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    finally:
        parallel.destroy(ctx)
    timed = records[warmup:]
    return sum(r["tokens"] - p["tokens"] for p, r in zip(records[warmup - 1:], timed)) / sum(
        r["step_time_s"] for r in timed)


def transformers_tokens_per_s(recipe, steps: int, warmup: int) -> float:
    from transformers import AutoModelForCausalLM, PretrainedConfig  # noqa: F401

    from megatron_octo.data.synthetic import SyntheticTokens
    from megatron_octo.models import get_family

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(recipe.precision.dtype, device)
    hf = get_family(recipe.model.family).to_hf(recipe.model)
    from transformers import AutoConfig

    config = AutoConfig.for_model(**hf)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    t, o, s = recipe.train, recipe.optimizer, recipe.schedule
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                            weight_decay=o.weight_decay)
    data = SyntheticTokens(recipe.model.vocab_size, t.seq_len, t.seed)
    accum = t.global_batch // t.micro_batch
    times = []
    for step in range(steps):
        start = time.perf_counter()
        for k in range(accum):
            batch = torch.stack([data[step * t.global_batch + k * t.micro_batch + i]
                                 for i in range(t.micro_batch)]).to(device)
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return (steps - warmup) * t.global_batch * t.seq_len / sum(times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny-cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from the timing")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for both sides (torch.set_num_threads); tiny models run fastest on one")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The baseline has no FP8: ours runs without it too unless an override asks for it.
    recipe = load_recipe(args.recipe, ["precision.fp8=null"] + list(args.overrides) + [
        f"train.iters={args.steps}", "train.tokens=null", "checkpoint.save=false", "logging.tensorboard=false",
        "checkpoint.load=null", "checkpoint.branch_from=null"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(device, fp8=False)
    ours = megatron_tokens_per_s(recipe, args.warmup)
    base = transformers_tokens_per_s(recipe, args.steps, args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"recipe {args.recipe} | device {name} | global batch {recipe.train.global_batch} x seq "
          f"{recipe.train.seq_len} | {args.steps} steps ({args.warmup} warm-up)")
    for label, tps in (("megatron-octo (Megatron-Core)", ours), ("transformers + AdamW (baseline)", base)):
        utilization = mfu(tps, recipe.model, recipe.train.seq_len, 1, peak)
        shown = f"{100 * utilization:.1f}%" if utilization is not None else "n/a (peak unknown)"
        print(f"{label:<34} {tps:>12,.0f} tokens/s   MFU {shown}")
    print(f"ratio: {ours / base:.2f}x")


if __name__ == "__main__":
    main()

"""Run under torchrun: the streamed weight sync (rl.sync.WeightSync) after real policy updates.

argv: MODEL_DIR WORK_DIR MODES OVERRIDES...; MODES is a comma-separated list of ``leader`` (each model-parallel
group's first rank hosts a transformers engine) or ``group`` (every rank of the model-parallel group hosts one and receives the buckets the
leader broadcasts, as vLLM's tensor-parallel workers inside the trainer's TP group do).

Per update, on every rank: the distributed optimizer with ``overlap_param_gather`` leaves parameters stale (checked:
the forced gather changes them), the sync runs under a memory probe whose peak must stay within the largest bucket
plus one layer's full tensors (computed here from the model's shapes, not by the code under test), the old
host-gather path on the same weights exceeds that bound, and every engine tensor equals the old path's bit for bit.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

BUCKET_BYTES = 64 << 10


def layer_bound_bytes(cfg, tp: int) -> int:
    """The largest "layer" in fp32: one decoder layer's full tensors, or the (vocabulary-padded) embedding."""
    from megatron_octo.models.shapes import padded_vocab_size

    h, f, d = cfg.hidden_size, cfg.ffn_hidden_size, cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * d, cfg.num_query_groups * d
    layer = (q + 2 * kv) * h + h * q + 2 * f * h + h * f + 2 * h
    embedding = padded_vocab_size(cfg.vocab_size, cfg.make_vocab_size_divisible_by, tp) * h
    return 4 * max(layer, embedding)


def random_batches(recipe, ctx, n: int):
    from megatron_octo.rl.policy import MicroBatch

    g = torch.Generator().manual_seed(1234 + ctx.dp_rank)
    out = []
    for _ in range(n):
        tokens = torch.randint(3, recipe.model.vocab_size, (2, 24), generator=g)
        mask = torch.zeros(2, 23)
        mask[:, 7:] = 1.0
        out.append(MicroBatch(tokens=tokens, mask=mask, advantages=torch.randn(2, generator=g)))
    return out


def _sync_twice(mode: str, recipe, ctx, parts, tokenizer) -> None:
    """Two updates, each followed by a weight sync in ``mode``; every engine must equal the trainer after each."""
    from megatron_octo.rl import policy
    from megatron_octo.rl.engines import TransformersEngine
    from megatron_octo.rl.loop import _old_logprobs
    from megatron_octo.rl.setup import _hf_config
    from megatron_octo.rl.sync import WeightSync, gather_hf_state
    from megatron_octo.utils.memprobe import TensorBytesProbe

    mp_rank = dist.get_rank(ctx.pgs.mp)
    hosts = mode == "group" or mp_rank == 0
    engine = TransformersEngine(_hf_config(recipe, tokenizer), tokenizer) if hosts else None
    engine_group = ctx.pgs.mp if mode == "group" else None
    sync = WeightSync(recipe.model, ctx.pgs.mp, torch.float32, engine_group=engine_group,
                      bucket_bytes=BUCKET_BYTES)
    bound = BUCKET_BYTES + layer_bound_bytes(recipe.model, ctx.tp)
    for update in range(2):
        batches = random_batches(recipe, ctx, 2)
        _old_logprobs(parts, ctx, recipe, batches, with_entropy=False)
        stats = policy.update(parts, ctx, recipe.rl, batches, recipe.model.vocab_size)
        assert stats["skipped"] == 0.0, stats
        params = [p for chunk in parts.model for p in chunk.parameters()]
        before = [p.detach().clone() for p in params]
        with TensorBytesProbe(python=False) as probe:  # Python metadata (plan, ShardedTensor objects) aside
            sync(parts.model, engine)
        assert sync.largest_bucket_bytes <= BUCKET_BYTES or mode == "leader"
        stale = any(not torch.equal(p, b) for p, b in zip(params, before))  # the sync made them current
        if recipe.parallel.overlap_param_gather and ctx.dp > 1:
            assert stale, "overlap_param_gather left nothing stale: the test does not exercise the gather"
        assert probe.peak_bytes <= bound, (update, probe.peak_bytes, bound)
        with TensorBytesProbe(python=False) as old_probe:
            reference = gather_hf_state(parts.model, recipe.model, ctx.pgs.mp)
        if mp_rank == 0:
            assert old_probe.peak_bytes > bound, (old_probe.peak_bytes, bound)
        box = [reference if mp_rank == 0 else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(ctx.pgs.mp, 0), group=ctx.pgs.mp)
        reference = box[0]
        if engine is not None:
            got = engine.model.state_dict()
            for name, tensor in reference.items():
                assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), (update, name)
        print(f"[{mode}] rank {dist.get_rank()} update {update}: sync peak {probe.peak_bytes} B "
              f"(bound {bound}, old path {old_probe.peak_bytes} B), stale before sync: {stale}", flush=True)
    dist.barrier()
    if ctx.is_main:
        print(f"WEIGHT SYNC OK {mode}", flush=True)


def main(model_dir: Path, work: Path, modes: str, overrides) -> None:
    from megatron_octo import parallel
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.rl.setup import load_tokenizer, materialize, starting_point
    from megatron_octo.training.build import build
    from megatron_octo.training.resume import restore

    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={model_dir}", f"rl.prompts.path={model_dir / 'prompts.jsonl'}",
                                           "schedule.lr=1e-2", *overrides])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        point = starting_point(recipe)
        tokenizer = load_tokenizer(recipe, point)
        start = materialize(recipe, point, work, ctx, print)
        parts = build(start, ctx, recipe.train.iters)
        restore(start, work, parts, recipe.train.iters)
        for mode in modes.split(","):  # one launch for both modes: 8 ranks start once
            _sync_twice(mode, recipe, ctx, parts, tokenizer)
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:])

"""Run under torchrun (2 processes): a TP=2 trainer loads the toy HF model (converted), the HF state gathered from
its shards goes into a transformers engine, and every engine tensor must equal the HF original bit for bit."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file


def main(model_dir: Path, work: Path) -> None:
    from megatron_octo import parallel
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.rl.engines import TransformersEngine
    from megatron_octo.rl.setup import _hf_config, load_tokenizer, materialize, starting_point
    from megatron_octo.rl.sync import gather_hf_state
    from megatron_octo.training.build import build
    from megatron_octo.training.resume import restore

    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={model_dir}", f"rl.prompts.path={model_dir / 'prompts.jsonl'}",
                                           "parallel.tp=2"])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        point = starting_point(recipe)
        tokenizer = load_tokenizer(recipe, point)
        start = materialize(recipe, point, work, ctx, print)
        parts = build(start, ctx, recipe.train.iters)
        restore(start, work, parts, recipe.train.iters)
        state = gather_hf_state(parts.model, recipe.model, ctx.pgs.mp)
        if ctx.is_main:
            engine = TransformersEngine(_hf_config(recipe, tokenizer), tokenizer)
            engine.load_weights(state.items())
            original = load_file(str(model_dir / "model.safetensors"))
            got = engine.model.state_dict()
            for name, tensor in original.items():
                assert torch.equal(got[name], tensor), name
            assert set(state) == set(original) - {"lm_head.weight"}, sorted(set(state) ^ set(original))
            print("SYNC OK", len(original), "tensors")
        dist.barrier()
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

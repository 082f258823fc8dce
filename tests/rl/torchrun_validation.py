"""Run under torchrun (DP=2, two engines): validation sharded over the engines equals a rank-0 validation of the
same weights (every benchmark's accuracy and every prediction). argv: MODEL_DIR WORK_DIR DATA_DIR"""

import json
import sys
from pathlib import Path

import torch.distributed as dist


def main(model_dir: Path, work: Path, data: Path) -> None:
    from megatron_octo import parallel
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.eval import run_eval
    from megatron_octo.rl.setup import make_engine, make_weight_sync, load_tokenizer, materialize, starting_point
    from megatron_octo.rl.validation import EngineGenerator, validate_policy
    from megatron_octo.training.build import build
    from megatron_octo.training.resume import restore

    recipe = load_recipe("tiny-cpu-grpo", [
        f"rl.init={model_dir}", f"rl.prompts.path={model_dir / 'prompts.jsonl'}", "rl.validation.interval=1",
        "rl.validation.benchmarks=[gsm8k,amc23,math500]", "rl.validation.limit=5", "rl.validation.max_new_tokens=6",
        f"rl.validation.data_dir={data}", "rl.prompts.template=raw"])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        point = starting_point(recipe)
        tokenizer = load_tokenizer(recipe, point)
        start = materialize(recipe, point, work, ctx, print)
        parts = build(start, ctx, recipe.train.iters)
        restore(start, work, parts, recipe.train.iters)
        engine = make_engine(recipe, ctx, tokenizer, work)
        make_weight_sync(recipe, ctx, engine)(parts.model, engine)
        sharded = validate_policy(recipe, ctx, engine, tokenizer, work, 1, print)
        if ctx.is_main:
            v = recipe.rl.validation
            alone = run_eval(None, v.benchmarks, data_dir=v.data_dir, zero_shot=True, template="raw",
                             generator=EngineGenerator(engine, tokenizer), max_new_tokens=v.max_new_tokens,
                             limit=v.limit, output_dir=str(work / "rank0"), show_progress=False, log=lambda s: None)
            assert sharded == {f"val_{k}": r["accuracy"] for k, r in alone["benchmarks"].items()}, sharded
            for name in v.benchmarks:
                a = work / "validation" / "step_0000001" / "predictions" / f"{name}.jsonl"
                b = work / "rank0" / "predictions" / f"{name}.jsonl"
                rows_a = [json.loads(x) for x in a.read_text().splitlines()]
                rows_b = [json.loads(x) for x in b.read_text().splitlines()]
                assert len(rows_a) == 5 and rows_a == rows_b, name
            print("VALIDATION OK", sharded)
        dist.barrier()
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))

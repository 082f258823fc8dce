"""The RL recipes carry RECIPE.md's stage-3 numbers, and ``validate_rl`` refuses inconsistent settings."""

from __future__ import annotations

import pytest

from megatron_octo.config.loader import ConfigError, load_recipe
from megatron_octo.config.validate import max_response_tokens, validate_rl


def test_octothinker_3b_grpo_numbers():
    r = load_recipe("octothinker-3b-grpo", ["rl.init=x"])
    rl = r.rl
    assert (rl.algorithm, rl.prompts_per_step, rl.rollout.n, rl.mini_batch_prompts) == ("grpo", 128, 16, 64)
    assert (r.schedule.lr, r.schedule.min_lr, r.schedule.style) == (1e-6, 1e-6, "constant")
    assert (rl.kl_coef, rl.entropy_coef, rl.clip_ratio, r.optimizer.clip_grad, rl.epochs) == (0, 0, 0.2, 1.0, 1)
    assert (rl.rollout.temperature, rl.rollout.top_p, rl.rollout.max_response_tokens) == (1.0, 1.0, 4096)
    assert rl.rollout.stop == ["User:", "Assistant:", "Question:", "Answer:"]
    assert rl.prompts.max_prompt_tokens == 400 and rl.prompts.path.endswith("rl/math8k_train.jsonl")
    assert rl.validation.benchmarks == ["math500", "gsm8k", "olympiadbench", "amc23"]
    assert r.model.preset == "llama-3.2-3b"
    # issue 18 on GPU: token-budget batches (the padded worst case, 2 x 4,496 tokens), vLLM sharded inside the
    # trainer's processes, sleep level 2 (a refit follows every wake), current weights under overlapped gathers
    assert rl.max_tokens_per_micro_batch == 9216 >= 2 * r.train.seq_len and rl.sequence_packing
    assert (rl.rollout.tensor_parallel, rl.rollout.sleep_level) == (True, 2)
    assert r.parallel.distributed_optimizer and r.parallel.overlap_param_gather
    validate_rl(r, dp=8)


def test_long_schedule_2048_4096_8192():
    r = load_recipe("octothinker-3b-grpo-long", ["rl.init=x"])
    # RECIPE.md: 2,048 for steps 0-200, 4,096 for 200-320, 8,192 for 320-400
    assert [max_response_tokens(r, s) for s in (0, 199, 200, 319, 320, 399)] == [2048, 2048, 4096, 4096, 8192, 8192]
    assert r.train.iters == 400


@pytest.mark.parametrize("overrides, message", [
    ([], "rl.init is not set"),
    (["rl.init=x", "rl.rollout.n=1"], "must be >= 2 for GRPO"),
    (["rl.init=x", "rl.mini_batch_prompts=48"], "must be divisible by rl.mini_batch_prompts"),
    (["rl.init=x", "rl.algorithm=dpo"], "rl.algorithm='dpo' is not one of"),
    (["rl.init=x", "rl.rollout.engine=trtllm"], "rl.rollout.engine='trtllm'"),
    (["rl.init=x", "rl.prompts.max_prompt_tokens=200000"], "exceeds model.max_position_embeddings"),
    (["rl.init=x", "rl.rollout.engine=transformers"], "tensor_parallel=true needs rl.rollout.engine=vllm"),
    (["rl.init=x", "rl.rollout.sleep_level=3"], "sleep_level=3 must be 1 or 2"),
    (["rl.init=x", "rl.max_tokens_per_micro_batch=0"], "max_tokens_per_micro_batch=0 must be >= 1"),
    (["rl.init=x", "rl.max_tokens_per_micro_batch=null"], "sequence_packing=true needs rl.max_tokens_per_micro_batch"),
])
def test_validate_rl_errors(overrides, message):
    r = load_recipe("octothinker-3b-grpo", overrides)
    with pytest.raises(ConfigError, match=message):
        validate_rl(r, dp=8)


def test_mini_batch_must_split_over_data_parallel_ranks():
    r = load_recipe("octothinker-3b-grpo", ["rl.init=x"])
    with pytest.raises(ConfigError, match="divisible by the data-parallel size 3"):
        validate_rl(r, dp=3)


def test_octo_rl_refuses_a_missing_start_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "rl", "--recipe", "tiny-cpu-grpo", "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("octo: error: rl.init is not set")
    assert not (tmp_path / "run").exists()  # refused before anything was written

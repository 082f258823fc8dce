"""Run under torchrun (2 processes, gloo): one vLLM engine with tensor parallelism 2 inside the job (vLLM's
external launcher), its ranks being the job's ranks as a trainer's TP group would be. Model A's weights are
refit in memory with model B's (full HF tensors on every rank, as the trainer's sync delivers them); greedy
outputs must then equal those of a single-process TP=1 engine started from B (computed beforehand and passed in).
argv: MODEL_A MODEL_B EXPECTED_JSON"""

import json
import os
import sys

import torch
import torch.distributed as dist


def main(model_a: str, model_b: str, expected_path: str) -> None:
    from safetensors.torch import load_file

    from megatron_octo.rollout.vllm_engine import VLLMEngine, VLLMEngineConfig

    dist.init_process_group("gloo")
    engine = VLLMEngine(VLLMEngineConfig(model_dir=model_a, dtype="float32", seed=0, tensor_parallel_size=2,
                                         max_model_len=256, kv_cache_memory_bytes=64 << 20, external_launcher=True,
                                         weight_bucket_bytes=1 << 16))
    expected = json.loads(open(expected_path).read())
    prompts = expected["prompts"]
    before = [g[0].token_ids for g in engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=8)]
    weights = load_file(os.path.join(model_b, "model.safetensors"))
    engine.load_weights(iter(sorted(weights.items())))
    after = engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=8)
    got = [g[0].token_ids for g in after]
    assert got == expected["tokens"], (got, expected["tokens"])
    assert got != before, "refit changed nothing: the test would pass with stale weights"
    if dist.get_rank() == 0:
        print("VLLM TP OK", got)
    engine.shutdown()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])

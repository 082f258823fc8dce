"""Run by test_vllm_load.py in a child process (so that vLLM's log output, engine-core process included, is captured
whole): ``python -m tests.convert.vllm_load_child PROMPTS_JSON MAX_TOKENS MODEL_DIR...`` loads each Hugging Face
directory with ``vllm.LLM`` (fp32, eager) and prints ``RESULT <json>``: per model, the greedy token ids of each
prompt."""

from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    from vllm import LLM, SamplingParams

    args = sys.argv[1:] if argv is None else argv
    prompts, max_tokens, model_dirs = json.loads(args[0]), int(args[1]), args[2:]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, detokenize=False)
    result = {}
    for model_dir in model_dirs:
        llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=128,
                  kv_cache_memory_bytes=64 << 20, seed=0)
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        result[model_dir] = [list(o.outputs[0].token_ids) for o in outputs]
        llm.llm_engine.engine_core.shutdown()
        del llm
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

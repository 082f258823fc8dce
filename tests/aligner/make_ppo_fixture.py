"""Run in the *main* venv by tests/aligner/test_ppo_step.py (``python -m tests.aligner.make_ppo_fixture OUT``): a tiny
policy that NeMo-Aligner's PPO and REINFORCE steps can learn something from, its NeMo actor and critic exports, and
the prompt and answer files of the actor and our reward server.

The policy: a 2-layer Llama (hidden 64) with a byte-level BPE tokenizer of the corpus below, fine-tuned here for a
few steps on prompts "Q: What is a+b? A:" followed by one of three boxed answers (one right) and EOS, so that it
samples right and wrong answers (non-constant rewards) and ends most responses with EOS (NeMo-Aligner's ``is_end``).
Its config.json has the vocabulary rounded up to 128 entries, which the NeMo export keeps (no padded rows whose
logits the generation model would lack). Writes OUT/hf (model + tokenizer), OUT/actor (``octo convert --to nemo``),
OUT/critic (``--critic``), OUT/prompts.jsonl (NeMo-Aligner's ``{"text": ...}``) and OUT/answers.jsonl (the reward
server's ``text`` + ``answer``), OUT/fixture.json (the prompts and their golds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PROBLEMS = [("1+1", "2"), ("1+2", "3"), ("2+2", "4"), ("2+1", "3"), ("1+3", "4"), ("3+1", "4"), ("0+2", "2"), ("2+0", "2")]
ANSWERS = ("2", "3", "4")  # every prompt is trained towards each of these equally: 1 right of 3
VOCAB = 128


def prompt(problem: str) -> str:
    return f"Q: What is {problem}? A:"


def make_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [prompt(p) + f" \\boxed{{{a}}}" for p, _ in PROBLEMS for a in ANSWERS]
    corpus += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]{}+-*/=\\"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)
    return fast


def make_policy(out: Path, seed: int = 0) -> Path:
    """The fine-tuned tiny Llama (module docstring), saved with its tokenizer in ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(out)
    assert len(tok) <= VOCAB, len(tok)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
                      rope_theta=10000.0)  # transformers 4 and 5 write RoPE settings differently: the default
    model = LlamaForCausalLM(cfg)
    rows = [tok(prompt(p) + f" \\boxed{{{a}}}").input_ids + [tok.eos_token_id] for p, _ in PROBLEMS for a in ANSWERS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):  # enough to put most mass on the three answers and EOS, not enough to pick one
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


def main(out: Path) -> None:
    from megatron_octo.convert import to_nemo
    from megatron_octo.convert.nemo_format import readable_by_transformers4

    hf = make_policy(out / "hf")
    to_nemo("hf", hf, out / "actor", quiet=True)
    to_nemo("hf", hf, out / "critic", quiet=True, critic=True)
    readable_by_transformers4(hf)  # the aligner venv's transformers 4 reads the generation model's tokenizer
    with (out / "prompts.jsonl").open("w") as f:
        for p, _ in PROBLEMS:
            f.write(json.dumps({"text": prompt(p)}) + "\n")
    with (out / "answers.jsonl").open("w") as f:
        for p, gold in PROBLEMS:
            f.write(json.dumps({"text": prompt(p), "answer": gold}) + "\n")
    (out / "fixture.json").write_text(json.dumps({"problems": PROBLEMS, "vocab": VOCAB}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

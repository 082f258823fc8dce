"""Writes NeMo-Aligner's PPO prompt JSONL from a problem set with gold answers (e.g. shared/data/rl/math8k_train.jsonl).

Each output line is ``{"text": <the RL template around the problem>, "answer": <gold>}``: NeMo-Aligner's prompt
dataset reads ``text``; ``octo serve reward --answers`` reads both, so the same file feeds the actor and the reward
server. Prompts over ``--max-prompt-tokens`` (RECIPE.md: 400) and records with an empty answer are left out, with
counts on stderr.

    python examples/rl/nemo_aligner/prepare_prompts.py --input math8k_train.jsonl --tokenizer Llama-3.2-3B \
        --output prompts/math8k_ppo.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="JSONL with a problem field and an answer field")
    p.add_argument("--output", required=True, help="prompt JSONL to write (refused if it exists, unless --overwrite)")
    p.add_argument("--tokenizer", required=True, help="the policy's Hugging Face tokenizer directory")
    p.add_argument("--template", default="complex", help="template name of megatron_octo.eval.prompts (complex)")
    p.add_argument("--question-field", default="prompt", help="problem field (default: prompt, as in MATH8K)")
    p.add_argument("--answer-field", default="answer", help="gold answer field (default: answer)")
    p.add_argument("--max-prompt-tokens", type=int, default=400, help="longer prompts are dropped (default: 400)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    from megatron_octo.data.tokenizer import load_tokenizer
    from megatron_octo.eval.prompts import TEMPLATES

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"prepare_prompts: error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    template = TEMPLATES[args.template][0]
    tok = load_tokenizer(args.tokenizer)
    kept, too_long, no_answer = [], 0, 0
    for line in Path(args.input).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        answer = str(rec.get(args.answer_field, "")).strip()
        if not answer:
            no_answer += 1
            continue
        text = template.replace("{question}", rec[args.question_field])
        if len(tok(text).input_ids) > args.max_prompt_tokens:
            too_long += 1
            continue
        kept.append(json.dumps({"text": text, "answer": answer}, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}: {len(kept)} prompts; dropped {too_long} over {args.max_prompt_tokens} tokens and "
          f"{no_answer} without an answer", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

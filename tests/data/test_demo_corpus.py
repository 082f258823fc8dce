"""The demo corpus: deterministic, four kinds, answers that check out, held-out problems, a loadable tokenizer."""

from __future__ import annotations

import json
import re

import pytest

from megatron_octo.data.demo_corpus import build_demo_data, demo_mixture_sources, generate

SMALL = {"web": 10, "qa": 40, "long_cot": 10, "chat": 10, "eval": 20}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo_data(tmp_path_factory.mktemp("demo"), seed=0, sizes=SMALL)


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert generate(0, SMALL) == generate(0, SMALL)
    assert generate(0, SMALL)["qa"] != generate(1, SMALL)["qa"]


def _check(question: str, answer: int) -> None:
    """Recompute the answer from the question text (independently of the generator)."""
    if m := re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", question):
        a, op, b = int(m[1]), m[2], int(m[3])
        assert answer == {"+": a + b, "-": a - b, "*": a * b}[op]
    elif m := re.fullmatch(r"Solve for x: (\d+)x ([-+]) (\d+) = (-?\d+)\.", question):
        a, sign, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert a * answer + (b if sign == "+" else -b) == c
    else:
        m = re.fullmatch(r"\w+ has (\d+) \w+ and buys (\d+) boxes with (\d+) \w+ each\. How many .*", question)
        assert m, question
        assert answer == int(m[1]) + int(m[2]) * int(m[3])


def test_answers_check_out_and_are_boxed():
    data = generate(0, SMALL)
    for r in data["qa"]:
        _check(r["question"], int(r["final_answer"]))
        assert r["answer"].endswith(f"\\boxed{{{r['final_answer']}}}.")
    for r in data["long_cot"]:
        _check(r["question"], int(r["final_answer"]))
    for r in data["eval"]:
        _check(r["prompt"], int(r["answer"]))
    assert {m["role"] for r in data["chat"] for m in r["messages"]} == {"user", "assistant"}


def test_held_out_problems_are_not_in_training():
    data = generate(0, {**SMALL, "qa": 400})
    held_out = {r["prompt"] for r in data["eval"]}
    assert len(held_out) == SMALL["eval"]
    seen = json.dumps({k: v for k, v in data.items() if k != "eval"})
    assert not any(json.dumps(q)[1:-1] in seen for q in held_out)


def test_build_demo_data_writes_corpus_tokenizer_and_datasets(demo):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    out = demo
    tok = AutoTokenizer.from_pretrained(out["tokenizer"])
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|end_of_text|>" and tok.pad_token == "<|pad|>"
    assert out["vocab_size"] == len(tok)
    assert out["documents"] == {"web": 10, "qa": 40, "long_cot": 10, "chat": 10}
    qa = IndexedDataset(out["datasets"]["qa"])
    first = json.loads(open(out["corpus"]["qa"]).readline())
    assert tok.decode(qa[0].tolist()) == (f"<|begin_of_text|>User: {first['question']}\nAssistant: "
                                          f"{first['answer']}<|end_of_text|>")
    assert len(open(out["corpus"]["eval"]).readlines()) == 20


def test_mixtures_on_the_demo_data(demo, tmp_path):
    from megatron_octo.config import load_recipe
    from megatron_octo.data.blend import build_blend

    out = demo
    sources = demo_mixture_sources(out["datasets"], "decay-hybrid")
    assert [(s["name"], s["weight"]) for s in sources][3:] == [("openr1-math-220k", 0.10),
                                                               ("openmathinstruct-2", 0.10), ("numinamath-1.5", 0.10)]
    assert [s["path"] for s in sources] == [out["datasets"][k] for k in ("web", "chat", "web", "long_cot", "qa", "qa")]
    spec = ", ".join(f"{{name: {s['name']}, weight: {s['weight']}, path: '{s['path']}'}}" for s in sources)
    recipe = load_recipe("tiny-cpu", ["data.kind=blend", f"data.sources=[{spec}]",
                                      f"model.vocab_size={out['vocab_size']}", f"data.cache_dir={tmp_path / 'c'}"])
    blend = build_blend(recipe, 100)
    assert blend[0].shape == (65,) and int(blend[0].max()) < out["vocab_size"]

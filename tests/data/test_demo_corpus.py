"""The demo corpus: deterministic, four kinds, answers that check out, held-out problems, a loadable tokenizer."""

from __future__ import annotations

import json
import re

import pytest

from megatron_octo.data.demo_corpus import build_demo_data, demo_mixture_sources, generate

SMALL = {"web": 10, "qa": 40, "long_cot": 10, "chat": 10, "eval": 20, "rl": 20}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo_data(tmp_path_factory.mktemp("demo"), seed=0, sizes=SMALL)


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert generate(0, SMALL) == generate(0, SMALL)
    assert generate(0, SMALL)["qa"] != generate(1, SMALL)["qa"]


def _solve(question: str) -> int:
    """The answer recomputed from the question text (independently of the generator)."""
    m = re.fullmatch(r"(?:User: )?What is (\d+)((?: [-+] \d+)+)\?(?:\nAssistant:)?", question)
    assert m, question
    value = int(m[1])
    for op, b in re.findall(r" ([-+]) (\d+)", m[2]):
        value = value + int(b) if op == "+" else value - int(b)
    return value


def test_answers_check_out_and_each_kind_has_its_format():
    data = generate(0, SMALL)
    for r in data["qa"]:
        assert int(r["final_answer"]) == _solve(r["question"])
        assert r["answer"].endswith(f"The answer is \\boxed{{{r['final_answer']}}}.")
    for r in data["long_cot"]:
        assert int(r["final_answer"]) == _solve(r["question"])
        assert r["question"].startswith("User: ") and "double-check" in r["reasoning"]
    long = sum(len(r["reasoning"]) for r in data["long_cot"]) / len(data["long_cot"])
    short = sum(len(r["answer"]) for r in data["qa"]) / len(data["qa"])
    assert long > 2.5 * short  # the Long branch's reasoning is several times the Short one's
    assert not any("boxed" in r["text"] for r in data["web"])
    for r in data["eval"] + data["rl"]:
        assert int(r["answer"]) == _solve(r["prompt"])
    assert {m["role"] for r in data["chat"] for m in r["messages"]} == {"user", "assistant"}


def test_held_out_and_rl_problems_are_not_in_training():
    from megatron_octo.data.demo_task import split_of

    data = generate(0, {**SMALL, "qa": 400})
    held_out, rl = {r["prompt"] for r in data["eval"]}, {r["prompt"] for r in data["rl"]}
    assert len(held_out) == SMALL["eval"] and len(rl) == SMALL["rl"] and not held_out & rl
    seen = json.dumps({k: v for k, v in data.items() if k not in ("eval", "rl")})
    questions = set(re.findall(r"What is \d+(?: [-+] \d+)+\?", seen))
    assert questions and {split_of(q) for q in questions} == {"train"}
    assert not questions & (held_out | rl)


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
    assert len(open(out["corpus"]["eval"]).readlines()) == 20 and len(open(out["corpus"]["rl"]).readlines()) == 20
    prompt_set = json.loads(open(out["prompts"]).read())["demo_chain_4shot"]
    assert prompt_set["few_shot_prompt"].count("Q: What is ") == 4


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

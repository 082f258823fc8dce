"""run_eval end to end: real benchmark files and prompts with a scripted generator (known answers, so the expected
accuracy is a hand count), custom items through the transformers backend on a tiny model, outputs and errors."""

from __future__ import annotations

import json

import pytest

from megatron_octo.eval import run_eval
from megatron_octo.eval.loaders import load_benchmark
from megatron_octo.eval.registry import BENCHMARKS, EvalError
from megatron_octo.utils.io import OutputExistsError
from tests.eval.helpers import read_rows


class ScriptedGenerator:
    """Answers each prompt with the completion scripted for the question it ends with; records the calls."""

    name = "scripted"

    def __init__(self, by_question):
        self.by_question = by_question
        self.calls = []

    def generate(self, prompts, max_new_tokens, stop, temperature, seed, progress=None):
        self.calls.append({"n": len(prompts), "max_new_tokens": max_new_tokens, "stop": tuple(stop),
                           "temperature": temperature})
        out = []
        for p in prompts:
            q = max((q for q in self.by_question if q in p), key=lambda q: p.rindex(q))
            out.append(self.by_question[q])
        if progress:
            progress(len(prompts))
        return out


def _script(data_dir):
    """Ten items of each benchmark with known verdicts: GSM8K 7 right (then the gold + 1), MATH500 5 right (their
    reference solutions, then a non-answer), SAT 4 right (then another option letter)."""
    d = data_dir / "eval"
    script = {}
    for i, it in enumerate(load_benchmark(BENCHMARKS["gsm8k"], d, limit=10)):
        script[it.question] = f"Some reasoning.\nThe answer is {int(it.gold) + (0 if i < 7 else 1)}."
    rows = read_rows("math500_test.jsonl")
    for i, it in enumerate(load_benchmark(BENCHMARKS["math500"], d, limit=10)):
        script[it.question] = rows[i]["solution"] if i < 5 else "Final Answer: The final answer is $\\text{none}$."
    for i, it in enumerate(load_benchmark(BENCHMARKS["sat"], d, limit=10)):
        letter = it.gold if i < 4 else next(c for c in it.choices if c != it.gold)
        script[it.question] = f"Reasoning.\nFinal Answer: The final answer is ({letter}). I hope it is correct."
    return script


def test_scripted_run_counts_and_files(data_dir, tmp_path):
    gen = ScriptedGenerator(_script(data_dir))
    out = tmp_path / "out"
    res = run_eval("OctoThinker-3B-Hybrid-Base", "gsm8k,math500,sat", data_dir=str(data_dir / "eval"),
                   generator=gen, output_dir=str(out), limit=10, show_progress=False, log=lambda s: None)
    accs = {k: v["accuracy"] for k, v in res["benchmarks"].items()}
    assert accs == {"gsm8k": 70.0, "math500": 50.0, "sat": 40.0}
    assert res["average"] == 53.33  # (70 + 50 + 40) / 3
    assert [c["stop"] for c in gen.calls] == [("\nQ:",), ("\nProblem:",), ("\nProblem:",)]
    assert all(c["max_new_tokens"] == 1024 and c["temperature"] == 0.0 for c in gen.calls)  # RECIPE defaults
    assert res["published"]["scores"]["gsm8k"] == 64.4 and res["published"]["delta"]["gsm8k"] == 5.6
    recs = [json.loads(line) for line in (out / "predictions" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(recs) == 10 and sum(r["correct"] for r in recs) == 7
    assert recs[0]["prompt"].endswith(recs[0]["question"] + "\nA:") and recs[0]["prediction"] == recs[0]["gold"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmarks"]["gsm8k"]["accuracy"] == 70.0 and saved["average"] == 53.33
    assert "| GSM8K | 10 | 70.0 | 0 | 64.4 | +5.6 |" in (out / "results.md").read_text()
    with pytest.raises(OutputExistsError):
        run_eval("m", "gsm8k", data_dir=str(data_dir / "eval"), generator=gen, output_dir=str(out))
    again = run_eval("m", "gsm8k", data_dir=str(data_dir / "eval"), generator=gen, output_dir=str(out),
                     overwrite=True, limit=10, show_progress=False, log=lambda s: None)
    assert again["benchmarks"]["gsm8k"]["correct"] == 7 and again["published"] is None


def test_custom_items_on_tiny_model(tiny_model):
    items = [{"id": "demo-0", "prompt": "What is 2 + 3?", "answer": "5"},
             {"id": "demo-1", "prompt": "What is 12 + 30?", "answer": "42"}]
    res = run_eval(str(tiny_model), items=items, zero_shot=True, template="user_assistant", max_new_tokens=6,
                   backend_kwargs={"dtype": "float32", "batch_size": 2}, show_progress=False, log=lambda s: None)
    r = res["benchmarks"]["custom"]
    assert r["n"] == 2 and r["accuracy"] == 100.0 * r["correct"] / 2
    assert res["mode"] == "zero-shot" and res["backend"] == "transformers"


def test_custom_items_scored_from_their_boxes():
    items = [{"question": "a", "answer": "5"}, {"question": "b", "answer": "\\frac{1}{2}"}, {"question": "c",
                                                                                          "answer": "3"}]
    replies = {"a": "so \\boxed{5}", "b": "giving \\boxed{0.5}", "c": "maybe 3"}
    res = run_eval("m", items=items, zero_shot=True, template="raw", generator=ScriptedGenerator(replies),
                   show_progress=False, log=lambda s: None)
    # "c" has no box: read as a few-shot "math" completion would be, and "maybe 3" holds no answer form
    assert res["benchmarks"]["custom"]["correct"] == 2


def test_custom_items_few_shot_with_a_prompt_set(tmp_path):
    prompts = tmp_path / "few_shot_prompts.json"
    prompts.write_text(json.dumps({"toy_2shot": {
        "prompt_template": "{few_shot_prompt}\n\nQ: {task_input}\nA: {task_output}", "returned_as": "prompt.rstrip()",
        "stop_words": ["\nQ:"], "few_shot_prompt": "Q: 1 + 1?\nA: The answer is 2.\n\nQ: 2 + 2?\nA: The answer is 4."}}))
    items = [{"question": "3 + 3?", "answer": "6"}, {"question": "4 + 4?", "answer": "8"},
             {"question": "5 + 5?", "answer": "10"}, {"question": "6 + 6?", "answer": "12"}]
    replies = {"3 + 3?": " The answer is 6.", "4 + 4?": " The answer is 9.", "5 + 5?": " The answer is 10.",
               "6 + 6?": " I do not know."}
    gen = ScriptedGenerator(replies)
    res = run_eval("m", items=items, prompts_path=str(prompts), custom_prompt="toy_2shot", generator=gen,
                   show_progress=False, log=lambda s: None)
    r = res["benchmarks"]["custom"]
    assert (res["mode"], r["n"], r["correct"], r["no_answer"]) == ("few-shot", 4, 2, 1)
    assert gen.calls[0]["stop"] == ("\nQ:",)
    # binomial standard error and Wilson interval of 2/4, by hand: sqrt(.5 * .5 / 4) = 0.25; Wilson at z = 1.96:
    # centre (0.5 + 0.4802) / 1.9604 = 0.5, half 1.96 * sqrt(0.0625 + 0.0600) / 1.9604 = 0.3498
    assert r["stderr"] == 25.0 and r["ci95"] == pytest.approx([15.0, 85.0], abs=0.05)
    with pytest.raises(EvalError, match="prompt set nope is not in"):
        run_eval("m", items=items, prompts_path=str(prompts), custom_prompt="nope", generator=gen)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(benchmarks="gsm9k"), EvalError, "unknown benchmark"),
        (dict(benchmarks="gsm8k", data_dir=None), EvalError, "no --data-dir"),
        (dict(benchmarks="gsm8k", data_dir="/nonexistent/dir"), EvalError, "does not exist"),
        (dict(benchmarks="gsm8k", model_dir="/nonexistent/model"), EvalError, "model directory"),
        (dict(benchmarks="gsm8k", source="s3"), EvalError, "unknown source"),
        (dict(items=[{"question": "q", "answer": "1"}]), EvalError, "zero-shot"),
    ],
)
def test_user_mistakes_fail_before_loading_a_model(data_dir, kwargs, error, fragment):
    args = dict(model_dir=None, data_dir=str(data_dir / "eval"))
    args.update(kwargs)
    with pytest.raises(error, match=fragment):
        run_eval(args.pop("model_dir"), **args)


def test_prompt_file_missing(tmp_path, data_dir):
    d = tmp_path / "eval"
    d.mkdir()
    (d / "amc23_test.jsonl").write_text((data_dir / "eval" / "amc23_test.jsonl").read_text())
    with pytest.raises(EvalError, match="few-shot prompts not found"):
        run_eval("m", "amc23", data_dir=str(d), generator=ScriptedGenerator({}))

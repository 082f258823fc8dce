"""``octo eval --resume``: an interrupted run continues from the predictions it wrote (complete benchmarks and the
scored chunks of the one it was in), generating only the rest; other settings are refused."""

from __future__ import annotations

import json

import pytest

from megatron_octo.eval import runner
from megatron_octo.eval.registry import EvalError
from megatron_octo.eval.runner import run_eval
from megatron_octo.utils.io import OutputExistsError

ITEMS = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]


class Counting:
    """Answers q<i> with a box holding i when i is even (so 5 of 10 are right); stops after ``fail_after``
    prompts as a kill would."""

    name = "counting"

    def __init__(self, fail_after=None):
        self.seen, self.fail_after = [], fail_after

    def generate(self, prompts, max_new_tokens, stop, temperature, seed, progress=None):
        if self.fail_after is not None and len(self.seen) + len(prompts) > self.fail_after:
            raise KeyboardInterrupt
        self.seen += list(prompts)
        return [f"\\boxed{{{p[1:]}}}" if int(p[1:]) % 2 == 0 else "\\boxed{x}" for p in prompts]


def _run(out, gen, **kw):
    return run_eval("m", items=ITEMS, zero_shot=True, template="raw", generator=gen, output_dir=str(out),
                    show_progress=False, log=lambda s: None, workers=1, **kw)


def test_resume_generates_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK_SIZE", 3)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(out, Counting(fail_after=7))  # chunks of 3: items 0-5 scored and appended, then the kill
    partial = out / "predictions" / "custom.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 6 and not (out / "results.json").exists()
    with open(partial, "a") as f:
        f.write('{"id": "6", "quest')  # a torn line from a kill during the append
    with pytest.raises(OutputExistsError, match="--resume"):
        _run(out, Counting())
    gen = Counting()
    res = _run(out, gen, resume=True)
    assert gen.seen == ["q6", "q7", "q8", "q9"]
    assert res["benchmarks"]["custom"]["n"] == 10 and res["benchmarks"]["custom"]["correct"] == 5
    assert res["benchmarks"]["custom"]["resumed"] == 6
    records = [json.loads(x) for x in (out / "predictions" / "custom.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [str(i) for i in range(10)] and not partial.exists()
    again = Counting()
    _run(out, again, resume=True)  # everything there: nothing generated
    assert again.seen == []


def test_resume_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK_SIZE", 3)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(out, Counting(fail_after=4))
    before = (out / "predictions" / "custom.partial.jsonl").read_text()
    with pytest.raises(EvalError, match="max_new_tokens 1024 -> 8"):
        _run(out, Counting(), resume=True, max_new_tokens=8)
    assert (out / "predictions" / "custom.partial.jsonl").read_text() == before


def test_overwrite_keeps_the_earlier_run_until_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK_SIZE", 3)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(out, Counting(fail_after=4))
    before = {p.name: p.read_text() for p in out.rglob("*") if p.is_file()}

    def refused(name, model_dir, **kwargs):
        raise EvalError("the vllm backend needs vLLM; use --backend transformers")

    monkeypatch.setattr(runner, "check_model_dir", lambda path: path)
    monkeypatch.setattr(runner, "make_backend", refused)
    with pytest.raises(EvalError, match="needs vLLM"):
        _run(out, None, overwrite=True, max_new_tokens=8)
    assert {p.name: p.read_text() for p in out.rglob("*") if p.is_file()} == before  # resumable as it was

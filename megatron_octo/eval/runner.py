"""``run_eval``: benchmarks (or a custom item list) through a generation backend, extraction and scoring, to a
results dict and, when an output directory is given, results.json / results.md / predictions/*.jsonl.

Order of work: every user mistake is found before the model loads (benchmark names, output directory, data files,
prompt file, model directory); then each benchmark is generated, scored and written in turn, so that a long run
leaves inspectable predictions behind it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from megatron_octo.config.choices import EVAL_SOURCES
from megatron_octo.eval import report
from megatron_octo.eval.backends import check_model_dir, make_backend
from megatron_octo.eval.loaders import custom_items, load_benchmark
from megatron_octo.eval.pool import DeadlinePool
from megatron_octo.eval.prompts import PromptSet, find_prompt_file, load_prompt_sets, zero_shot_prompt
from megatron_octo.eval.registry import Benchmark, EvalError, EvalItem, get_benchmark, resolve_benchmarks
from megatron_octo.eval.scoring import DEFAULT_TIMEOUT, extract_prediction, score_predictions
from megatron_octo.eval.stats import standard_error, wilson_interval
from megatron_octo.utils.hub import resolve_model_path
from megatron_octo.utils.progress import Progress

CUSTOM = "custom"
CHUNK_SIZE = 256
"""Prompts generated between two appends to a benchmark's partial predictions (what an interruption can lose)."""


@dataclass
class _Task:
    """One benchmark of a run: its items and the prompt set that renders them."""

    name: str
    answer_format: str
    items: List[EvalItem]
    prompt: PromptSet


def _prepare_tasks(
    benchmarks,
    items,
    data_dir,
    source,
    hf_datasets,
    limit,
    zero_shot,
    template,
    prompts_path,
    custom_format,
    custom_prompt=None,
) -> List[_Task]:
    """Load every benchmark's items and prompt set (all user mistakes surface here, before the model loads)."""
    zs = zero_shot_prompt(template) if zero_shot else None
    if items is not None:
        custom = zs if zs is not None else _custom_prompt_set(prompts_path, custom_prompt)
        loaded = custom_items(items)
        if not loaded:
            raise EvalError("no custom items given; pass at least one {question, answer} item")
        return [_Task(CUSTOM, custom_format, loaded[:limit] if limit else loaded, custom)]
    benches: List[Benchmark] = resolve_benchmarks(benchmarks)
    if source == "local" and data_dir is None:
        raise EvalError(
            "no --data-dir given; point it at the benchmark JSONL files (like shared/data/eval) or use --source hf"
        )
    if source == "local" and not Path(data_dir).is_dir():
        raise EvalError(
            f"data directory {data_dir} does not exist; point --data-dir at the benchmark JSONL files "
            "(like shared/data/eval)"
        )
    prompt_sets = None if zero_shot else load_prompt_sets(find_prompt_file(data_dir, prompts_path))
    tasks = []
    for b in benches:
        if source == "local":
            loaded = load_benchmark(b, data_dir, limit=limit)
        else:  # the Hub: a --hf-dataset override, else the registered dataset
            loaded = load_benchmark(b, None, hf=(hf_datasets or {}).get(b.name), limit=limit)
        if not loaded:
            where = f"{data_dir}/{b.filename}" if source == "local" else "its Hugging Face dataset"
            raise EvalError(f"{b.name}: {where} holds no items; fix the file or leave {b.name} out of --benchmarks")
        if prompt_sets is not None and b.prompt not in prompt_sets:
            raise EvalError(f"prompt set {b.prompt} (for {b.name}) is missing from the prompt file")
        prompt = zs if zs is not None else prompt_sets[b.prompt] if prompt_sets is not None else None
        assert prompt is not None  # zero-shot has zs; few-shot has prompt_sets
        tasks.append(_Task(b.name, b.answer_format, loaded, prompt))
    return tasks


def _custom_prompt_set(prompts_path, custom_prompt) -> PromptSet:
    """The few-shot prompt set that renders custom items: ``custom_prompt`` of the prompt file ``prompts_path``."""
    if prompts_path is None or custom_prompt is None:
        raise EvalError(
            "custom items are evaluated zero-shot (zero_shot=True and a template) or few-shot with a prompt file "
            "and the name of its prompt set (prompts_path, custom_prompt)"
        )
    sets = load_prompt_sets(find_prompt_file(None, prompts_path))
    if custom_prompt not in sets:
        raise EvalError(f"prompt set {custom_prompt} is not in {prompts_path}; choose from {', '.join(sets)}")
    return sets[custom_prompt]


def _evaluate_task(
    task: _Task,
    generator,
    pool: DeadlinePool,
    gen_kwargs: Mapping[str, Any],
    zero_shot: bool,
    show_progress: bool,
    output_dir: Optional[str] = None,
    done: Sequence[Mapping[str, Any]] = (),
    chunk_size: Optional[int] = None,
) -> Dict[str, Any]:
    """Generate, extract and score one benchmark: its summary and per-item records. ``done`` holds the records of
    the first items from an interrupted run (checked by ``report.resumable_records``); the rest are generated in
    chunks of ``chunk_size`` prompts, each chunk's records appended to the benchmark's partial predictions file
    under ``output_dir`` as soon as it is scored, so an interruption loses at most one chunk."""
    prompts = [task.prompt.render(it.question) for it in task.items]
    chunk_size = chunk_size or CHUNK_SIZE
    records: List[Dict[str, Any]] = [dict(r) for r in done]
    progress = Progress(len(prompts), task.name, unit="items", initial=len(records)) if show_progress else None
    gen_s = score_s = 0.0
    for start in range(len(records), len(prompts), chunk_size):
        items, chunk = task.items[start : start + chunk_size], prompts[start : start + chunk_size]
        t0 = time.monotonic()
        completions = generator.generate(chunk, stop=task.prompt.stop, progress=progress, **gen_kwargs)
        t1 = time.monotonic()
        extracted = [extract_prediction(task.answer_format, c, it, zero_shot) for c, it in zip(completions, items)]
        verdicts = score_predictions([(kind, pred, it.gold) for (pred, kind), it in zip(extracted, items)], pool=pool)
        new = [
            {
                "id": it.id,
                "question": it.question,
                "gold": it.gold,
                "prompt": p,
                "completion": c,
                "prediction": pred,
                "kind": kind,
                "correct": ok,
            }
            for it, p, c, (pred, kind), ok in zip(items, chunk, completions, extracted, verdicts)
        ]
        gen_s, score_s = gen_s + (t1 - t0), score_s + (time.monotonic() - t1)
        if output_dir is not None:
            report.append_partial(output_dir, task.name, new)
        records.extend(new)
    if progress is not None:
        progress.close()
    n, correct = len(records), sum(bool(r["correct"]) for r in records)
    summary = {
        "n": n,
        "correct": correct,
        "accuracy": round(100.0 * correct / n, 2) if n else 0.0,
        "stderr": round(standard_error(correct, n), 2),
        "ci95": [round(x, 2) for x in wilson_interval(correct, n)],
        "no_answer": sum(1 for r in records if r["prediction"] is None),
        "prompt_set": task.prompt.key,
        "generation_s": round(gen_s, 2),
        "scoring_s": round(score_s, 2),
        "resumed": len(done),
    }
    return {"summary": summary, "records": records, "prompts": prompts}


def _check_numbers(limit: Optional[int], max_new_tokens: int, timeout: float) -> None:
    if limit is not None and limit < 1:
        raise EvalError(f"limit {limit} must be >= 1 (leave --limit out to evaluate every item)")
    if max_new_tokens < 1:
        raise EvalError(f"max_new_tokens {max_new_tokens} must be >= 1 (the paper's protocol uses 1024)")
    if not timeout > 0 or timeout == float("inf"):
        raise EvalError(f"verification timeout {timeout} s must be a finite number > 0 (RECIPE.md: 2 s)")


def _resume_or_start(
    output_dir: Optional[str], resume: bool, settings: Mapping[str, Any], tasks: List[_Task], log: Callable[[str], None]
) -> Dict[str, List[Dict[str, Any]]]:
    """With ``resume``: the records each benchmark already has in ``output_dir`` (settings checked); otherwise
    record the settings of a fresh run there. Nothing is read or written without ``output_dir``."""
    if output_dir is None:
        return {}
    if not resume:
        report.start_run(output_dir, settings, [t.name for t in tasks])
        return {}
    report.check_settings(output_dir, settings)
    done = {}
    for task in tasks:
        ids = [it.id for it in task.items]
        records = report.resumable_records(
            output_dir, task.name, ids, [task.prompt.render(it.question) for it in task.items]
        )
        if records:
            log(f"{task.name}: resuming after {len(records)} of {len(ids)} items")
            done[task.name] = records
    report.start_run(output_dir, settings, [], clear_partials=False)
    return done


def parse_hf_overrides(specs: Sequence[str]) -> Dict[str, str]:
    """["math500=HuggingFaceH4/MATH-500@test", ...] -> {"math500": "HuggingFaceH4/MATH-500@test"}, names checked."""
    out = {}
    for spec in specs or ():
        name, sep, repo = spec.partition("=")
        if not sep or not repo:
            raise EvalError(f"bad --hf-dataset '{spec}'; write NAME=REPO[:CONFIG][@SPLIT]")
        out[get_benchmark(name).name] = repo
    return out


def run_eval(
    model_dir: Optional[str] = None,
    benchmarks: Union[str, Sequence[str]] = "paper",
    *,
    items: Optional[Sequence[Mapping[str, Any]]] = None,
    custom_format: str = "math",
    custom_prompt: Optional[str] = None,
    data_dir: Optional[str] = None,
    source: str = "local",
    hf_datasets: Optional[Mapping[str, str]] = None,
    prompts_path: Optional[str] = None,
    zero_shot: bool = False,
    template: str = "complex",
    backend: str = "transformers",
    backend_kwargs: Optional[Mapping[str, Any]] = None,
    generator=None,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    seed: int = 0,
    limit: Optional[int] = None,
    output_dir: Optional[str] = None,
    overwrite: bool = False,
    resume: bool = False,
    published: Optional[str] = None,
    workers: Optional[int] = None,
    timeout: float = DEFAULT_TIMEOUT,
    show_progress: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> Dict[str, Any]:
    """Evaluate a Hugging Face model directory on benchmarks, or on custom ``items`` ({question, answer} dicts,
    scored with ``custom_format``; zero-shot, or few-shot with the prompt set ``custom_prompt`` of ``prompts_path``).

    Few-shot by default (the exact OctoThinker prompts from ``prompts_path`` or beside ``data_dir``); ``zero_shot``
    uses ``template`` and reads answers from the last ``\\boxed{}``. Greedy, ``max_new_tokens`` new tokens. A
    ``generator`` object (``generate(prompts, max_new_tokens, stop, temperature, seed, progress)``) replaces the
    backend (``model_dir`` is then only a label). Returns the results dict (``benchmarks``: per benchmark n,
    correct, accuracy in %, its standard error ``stderr`` and 95% Wilson interval ``ci95`` in %, no_answer;
    ``average``; ``published`` comparison when the model is one of OctoThinker's or ``published`` names an entry);
    with ``output_dir`` also writes the report files.
    ``model_dir`` may be a Hub model ID (``org/name[@revision]``, through the Hugging Face cache). ``resume``
    continues an interrupted run in ``output_dir``: the predictions it wrote (complete benchmarks and the chunks of
    an unfinished one) are kept and only the remaining items are generated; its settings must match.
    Raises EvalError / OutputExistsError on user mistakes, before loading the model.
    """
    _check_numbers(limit, max_new_tokens, timeout)
    if source not in EVAL_SOURCES:
        raise EvalError(f"unknown source '{source}'; choose from {', '.join(EVAL_SOURCES)}")
    if output_dir is not None:
        report.check_output_dir(output_dir, overwrite, resume)
    tasks = _prepare_tasks(
        benchmarks,
        items,
        data_dir,
        source,
        hf_datasets,
        limit,
        zero_shot,
        template,
        prompts_path,
        custom_format,
        custom_prompt,
    )
    setting = "zero-shot" if zero_shot else "few-shot"
    settings = {
        "model": str(model_dir),
        "mode": setting,
        "template": template if zero_shot else None,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    local_model = None
    if generator is None:
        if model_dir is None:
            raise EvalError("no model given; pass --model with a Hugging Face model directory or Hub ID")
        local_model = check_model_dir(resolve_model_path(model_dir))
    pub_key = report.match_published(
        report.model_names(model_dir) + report.model_names(local_model), setting, published
    )
    # A resume is checked against the earlier run before the model loads; a fresh run (--overwrite) clears the
    # earlier run's partial predictions only once the model has loaded, so a refused backend costs nothing.
    done = _resume_or_start(output_dir, resume, settings, tasks, log) if resume else {}
    if generator is None:
        log(f"loading {model_dir} with {backend}")
        generator = make_backend(backend, local_model, **dict(backend_kwargs or {}))
    if not resume:
        _resume_or_start(output_dir, resume, settings, tasks, log)  # a fresh run's first write into output_dir
    gen_kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    results: Dict[str, Any] = {
        **settings,
        "backend": getattr(generator, "name", type(generator).__name__),
        "limit": limit,
        "verify_timeout_s": timeout,
        "benchmarks": {},
    }
    with DeadlinePool(workers=workers, timeout=timeout) as pool:
        for task in tasks:
            out = _evaluate_task(
                task, generator, pool, gen_kwargs, zero_shot, show_progress, output_dir, done.get(task.name, ())
            )
            results["benchmarks"][task.name] = out["summary"]
            if output_dir is not None:
                report.write_predictions(output_dir, task.name, out["records"])
            s = out["summary"]
            log(f"{task.name}: {s['accuracy']:.1f}% ({s['correct']}/{s['n']}), no answer {s['no_answer']}")
        results["verify_stats"] = dict(pool.stats)
    accs = {k: v["accuracy"] for k, v in results["benchmarks"].items()}
    results["average"] = round(sum(accs.values()) / len(accs), 2) if accs else 0.0
    results["published"] = report.published_comparison(pub_key, accs)
    if output_dir is not None:
        report.write_results(output_dir, results)
    return results

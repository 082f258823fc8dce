"""``octo demo``: OctoThinker's experiment in miniature, at toy scale on CPU, ending in a report.

Stages (each adds one top-level object to ``summary.json`` and a section to ``report.md``):
- ``data``: a synthetic math task (``data.demo_task``: chains of additions and subtractions with worked steps,
  tunable difficulty) split into training / held-out evaluation / RL problems with no overlap, written as the
  recipe's four kinds of data; a BPE tokenizer trained on them; indexed datasets.
- ``train``: (1) ``tiny-cpu`` in one process and on TP=2 x PP=2 (4 processes), from the same layout-invariant
  initialization, so the loss curves must coincide; (2) the stable stage on the web-like mixture, then the Long,
  Short and Hybrid decay branches (``checkpoint.branch_from`` its checkpoint, run side by side), each on its own
  mixture: long ``<think>`` chains of thought, short ones, or both.
- ``convert``: each decayed branch exported to Hugging Face format and loaded back with transformers.
- ``eval``: each branch on the same held-out problems, few-shot (4-shot ``Q:``/``A:``) and zero-shot with the RL
  template, through ``megatron_octo.eval`` (math-verify scoring), with standard errors and Wilson intervals.
- ``rl``: GRPO (``octo rl``, transformers engine, the math reward) from each branch of ``plan["rl_branches"]`` on
  the RL split, with greedy validation on the held-out problems before the first step and every
  ``rl_val_interval`` steps (``rl.validation.path`` / ``at_start``).
- ``comparison``: one row per branch (accuracy after decay, after RL, the gain with its paired standard error,
  response lengths) and the paper's directions checked against it; ``comparison.png``.

Every training and RL run is an ``octo train`` / ``octo rl`` child process (under torchrun for several processes),
exactly as a user runs it. Outputs: ``WORKDIR/report.md`` with PNG plots beside it, ``WORKDIR/summary.json``, the
runs. The report's sentences are made from the measured numbers (``demo_report``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from megatron_octo.training.metrics import read_metrics
from megatron_octo.utils.io import OutputExistsError, atomic_write_text, check_writable_dir

DEMO_OUTPUTS = (
    "report.md",
    "summary.json",
    "data",
    "recipes",
    "train",
    "hf",
    "eval",
    "rl",
    "train_loss.png",
    "stable_then_decay.png",
    "comparison.png",
)
BRANCHES = ("long", "short", "hybrid")
LAYOUTS = {"single": (1, []), "tp2-pp2": (4, ["parallel.tp=2", "parallel.pp=2"])}
TEMPLATE = "user_assistant"
"""The RL template (``User: {question}\nAssistant:``, the decay data's QA layout): RL prompts, RL validation and
the zero-shot evaluation all use it."""
FULL: Dict[str, Any] = {
    "task": {"min_ops": 2, "max_ops": 3, "max_value": 19},
    "corpus": None,
    "layout_steps": 10,
    "stable_steps": 450,
    "decay_steps": 150,
    "eval_items": 300,
    "eval_tokens": 192,
    "rl_branches": BRANCHES,
    "rl_steps": 30,
    "rl_tokens": 192,
    "rl_lr": 1e-4,
    "rl_temperature": 0.7,
    "rl_val_interval": 10,
}
"""The full demo. Tuned on the shared 2-core machine: with numbers up to 19 and 450 stable steps the decayed branches
land well above chance but short of the ceiling, so RL has room (with 700 stable steps Short and Hybrid were at
99-100% after decay and only the Long branch could gain). RL LR: 1e-3 collapsed the policy within ten steps, 2e-4
lowered the training reward and the held-out accuracy of the 450-step branches (Short 47% -> 30% at temperature 1);
this plan runs 1e-4 at temperature 0.7 (Short -6 points, within noise). README gives the measured table and time."""
QUICK: Dict[str, Any] = {
    "task": {"min_ops": 2, "max_ops": 3, "max_value": 9},
    "corpus": {"web": 40, "qa": 60, "long_cot": 40, "chat": 40, "eval": 6, "rl": 20},
    "layout_steps": 0,
    "stable_steps": 3,
    "decay_steps": 2,
    "eval_items": 6,
    "eval_tokens": 8,
    "rl_branches": ("short",),
    "rl_steps": 2,
    "rl_tokens": 8,
    "rl_lr": 3e-4,
    "rl_temperature": 0.7,
    "rl_val_interval": 1,
}
"""``--quick``: every stage of the experiment at the smallest size that runs it (tests); the layout check is left
out (``layout_steps`` 0: five process starts; tests/training/test_layouts.py covers TP x PP equivalence)."""
STAGE_GEOMETRY = {"global_batch": 16, "micro_batch": 8, "seq_len": 128}
"""Batch geometry of the demo's stable and decay stages: 2,048 tokens a step."""
RL_GEOMETRY = ["rl.prompts_per_step=8", "rl.mini_batch_prompts=8", "rl.rollout.n=8"]
"""8 prompts x 8 samples a step, one update."""


def _prepare(workdir: Path, overwrite: bool) -> None:
    check_writable_dir(workdir, "--workdir")
    existing = [name for name in DEMO_OUTPUTS if (workdir / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{workdir} already holds demo outputs ({', '.join(existing)}): pass --overwrite or another --workdir"
        )
    for name in existing:
        path = workdir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    workdir.mkdir(parents=True, exist_ok=True)


def _jobs() -> int:
    """Child processes run side by side: one per core this process may use (each runs one thread)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _command(command: str, recipe: str, run_dir: Path, overrides: List[str], nproc: int = 1) -> List[str]:
    """The ``octo train`` / ``octo rl`` command line (under torchrun for several processes)."""
    octo = [sys.executable, "-m", "megatron_octo"]
    if nproc > 1:
        octo = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        octo += ["-m", "megatron_octo"]
    return octo + [command, "--recipe", recipe, "--run-dir", str(run_dir), "logging.tensorboard=false", *overrides]


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def _octo(command: str, recipe: str, run_dir: Path, overrides: List[str], nproc: int = 1) -> List[dict]:
    """One ``octo train`` / ``octo rl`` child process, as a user runs it; its progress streams to this terminal.
    Returns its metrics."""
    cmd = _command(command, recipe, run_dir, overrides, nproc)
    print(f"[demo] octo {' '.join(cmd[cmd.index(command) :])}", flush=True)
    result = subprocess.run(cmd, env=_env())
    if result.returncode != 0:
        raise RuntimeError(f"demo run failed (exit {result.returncode}): {' '.join(cmd)}")
    return read_metrics(run_dir / "metrics.jsonl")


def _octo_train(recipe: str, run_dir: Path, overrides: List[str], nproc: int = 1) -> List[dict]:
    return _octo("train", recipe, run_dir, overrides, nproc)


_PRINT = threading.Lock()


def _run_labelled(label: str, cmd: List[str]) -> int:
    """Run ``cmd``, each line of its output printed with ``[label]`` in front; its exit status."""
    print(f"[demo] {label}: octo {' '.join(cmd[cmd.index('--recipe') - 1 :])}", flush=True)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        with _PRINT:
            print(f"[{label}] {line}", end="", flush=True)
    return proc.wait()


def _octo_many(runs: Sequence[Tuple[str, str, str, Path, List[str]]]) -> Dict[str, List[dict]]:
    """Several independent ``octo`` runs (label, command, recipe, run dir, overrides), ``_jobs()`` at a time, their
    output lines labelled. Returns each run's metrics by label; RuntimeError naming every run that failed."""
    with ThreadPoolExecutor(max_workers=min(_jobs(), len(runs))) as pool:
        codes = list(pool.map(lambda r: _run_labelled(r[0], _command(r[1], r[2], r[3], r[4])), runs))
    failed = [f"{r[0]} (exit {c})" for r, c in zip(runs, codes) if c != 0]
    if failed:
        raise RuntimeError(f"demo runs failed: {', '.join(failed)}; their output above says why")
    return {r[0]: read_metrics(r[3] / "metrics.jsonl") for r in runs}


def _plot_layouts(curves: Dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, records), style in zip(curves.items(), ("-", "--")):
        steps = [r["step"] for r in records]
        ax_loss.plot(steps, [r["loss"] for r in records], style, label=name)
        ax_lr.plot(steps, [r["lr"] for r in records], style, label=name)
    ax_loss.set(xlabel="step", ylabel="loss", title="tiny-cpu: same run on two layouts")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def data_stage(workdir: Path, plan: Dict) -> Dict:
    """Generate the task's problems as the four kinds of data, train the tokenizer, preprocess each kind."""
    from megatron_octo.data.demo_corpus import build_demo_data
    from megatron_octo.data.demo_task import TaskSpec

    print("[demo] generating the math task's corpus, training its BPE tokenizer, preprocessing", flush=True)
    return build_demo_data(workdir / "data", sizes=plan["corpus"], spec=TaskSpec(**plan["task"]))


def _stage_recipe(workdir: Path, base: str, mixture: str, data: Dict) -> str:
    """A recipe file: ``base`` with its mixture pointed at the demo datasets and the demo tokenizer's vocabulary."""
    from megatron_octo.data.demo_corpus import demo_mixture_sources

    body = {
        "base": base,
        "model": {"vocab_size": data["vocab_size"]},
        "train": STAGE_GEOMETRY,
        "data": {
            "kind": "blend",
            "mixture": None,
            "tokenizer": data["tokenizer"],
            "sources": demo_mixture_sources(data["datasets"], mixture),
        },
    }
    return _write_recipe(workdir / "recipes" / f"{base}.yaml", body)


def _write_recipe(path: Path, body: Dict) -> str:
    import yaml

    atomic_write_text(path, yaml.safe_dump(body, sort_keys=False))
    return str(path)


def layout_check(workdir: Path, steps: int) -> Dict:
    """tiny-cpu on one process and on TP=2 x PP=2; their largest relative loss difference."""
    curves = {
        name: _octo_train("tiny-cpu", workdir / "train" / "layouts" / name, [f"train.iters={steps}", *ovr], nproc)
        for name, (nproc, ovr) in LAYOUTS.items()
    }
    _plot_layouts(curves, workdir / "train_loss.png")
    ref = curves["single"]
    max_rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for c in curves.values() for a, b in zip(ref, c))
    runs = {
        name: {
            "first_loss": c[0]["loss"],
            "final_loss": c[-1]["loss"],
            "tokens_per_s": sum(r["tokens_per_s"] for r in c[1:]) / max(len(c) - 1, 1),
        }
        for name, c in curves.items()
    }
    return {
        "recipe": "tiny-cpu",
        "steps": steps,
        "tokens": ref[-1]["tokens"],
        "runs": runs,
        "max_relative_loss_difference_between_layouts": max_rel,
        "plot": "train_loss.png",
    }


def stable_then_decay(workdir: Path, data: Dict, plan: Dict) -> Dict:
    """The stable stage on the web-like mixture, then the three decay branches from its final checkpoint."""
    from megatron_octo.training.plot import plot_runs

    runs = workdir / "train"
    stable = _stage_recipe(workdir, "tiny-cpu-stable", "stable", data)
    records = {"stable": _octo_train(stable, runs / "stable", [f"train.iters={plan['stable_steps']}"])}
    decays = [
        (
            f"decay-{branch}",
            "train",
            _stage_recipe(workdir, f"tiny-cpu-decay-{branch}", f"decay-{branch}", data),
            runs / f"decay-{branch}",
            [f"train.iters={plan['decay_steps']}", f"checkpoint.branch_from={runs / 'stable'}"],
        )
        for branch in BRANCHES
    ]
    records.update(_octo_many(decays))
    plot_runs([str(runs / name) for name in records], str(workdir / "stable_then_decay.png"), overwrite=True)
    return {
        name: {
            "steps": len(r),
            "tokens": r[-1]["tokens"],
            "first_loss": r[0]["loss"],
            "final_loss": r[-1]["loss"],
            "final_lr": r[-1]["lr"],
            "run_dir": f"train/{name}",
        }
        for name, r in records.items()
    } | {"plot": "stable_then_decay.png"}


def convert_stage(workdir: Path, data: Dict) -> Dict:
    """Export each decayed branch to a Hugging Face directory and load it back with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_octo.convert import mcore_to_hf

    out = {}
    for branch in BRANCHES:
        hf_dir = workdir / "hf" / f"decay-{branch}"
        print(f"[demo] exporting decay-{branch} to Hugging Face format: {hf_dir}", flush=True)
        mcore_to_hf(
            str(workdir / "train" / f"decay-{branch}"), str(hf_dir), tokenizer_dir=data["tokenizer"], quiet=True
        )
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        ids = AutoTokenizer.from_pretrained(hf_dir)("User: What is 2 + 3?\nAssistant:", return_tensors="pt")
        with torch.no_grad():
            logits = model(**ids).logits  # [1, s, vocab]
        architecture = (model.config.architectures or ["?"])[0]
        out[f"decay-{branch}"] = {
            "hf_dir": f"hf/decay-{branch}",
            "architecture": architecture,
            "parameters": sum(p.numel() for p in model.parameters()),
            "logits_finite": bool(torch.isfinite(logits).all()),
        }
    return out


def _held_out(data: Dict, n: int) -> List[Dict[str, str]]:
    with open(data["corpus"]["eval"]) as f:
        return [{"question": r["prompt"], "answer": r["answer"]} for r in map(json.loads, f)][:n]


def _response_tokens(tokenizer, completions: Sequence[str]) -> float:
    """Mean length in tokens of the completions."""
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    return sum(lengths) / max(len(lengths), 1)


def eval_stage(workdir: Path, data: Dict, plan: Dict) -> Dict:
    """Every exported branch on the same held-out problems: few-shot (the demo's 4-shot prompt set) and zero-shot
    with the RL template; accuracy with its standard error and Wilson interval, mean response length."""
    from transformers import AutoTokenizer

    from megatron_octo.data.demo_corpus import DEMO_PROMPT_SET
    from megatron_octo.eval import run_eval

    items, tokenizer = _held_out(data, plan["eval_items"]), AutoTokenizer.from_pretrained(data["tokenizer"])
    modes = {
        "few_shot": {"prompts_path": data["prompts"], "custom_prompt": DEMO_PROMPT_SET},
        "zero_shot": {"zero_shot": True, "template": TEMPLATE},
    }
    out: Dict[str, Any] = {"n": len(items), "template": TEMPLATE, "prompt_set": DEMO_PROMPT_SET}
    for branch in BRANCHES:
        print(f"[demo] evaluating decay-{branch} on {len(items)} held-out problems (few-shot, zero-shot)", flush=True)
        out[f"decay-{branch}"] = {}
        for mode, kwargs in modes.items():
            where = workdir / "eval" / f"decay-{branch}" / mode
            results = run_eval(
                str(workdir / "hf" / f"decay-{branch}"),
                items=items,
                max_new_tokens=plan["eval_tokens"],
                output_dir=str(where),
                show_progress=False,
                log=lambda line: None,
                **kwargs,
            )
            r = results["benchmarks"]["custom"]
            with open(where / "predictions" / "custom.jsonl") as f:
                completions = [json.loads(line)["completion"] for line in f]
            out[f"decay-{branch}"][mode] = {
                **{k: r[k] for k in ("n", "correct", "accuracy", "stderr", "ci95", "no_answer")},
                "response_tokens": _response_tokens(tokenizer, completions),
                "dir": str(where.relative_to(workdir)),
            }
    return out


def _rl_recipe(workdir: Path, data: Dict, plan: Dict, branch: str) -> str:
    """GRPO from the decayed ``branch`` on the RL split, validated greedily on the held-out problems."""
    return _write_recipe(
        workdir / "recipes" / f"tiny-cpu-grpo-{branch}.yaml",
        {
            "base": "tiny-cpu-grpo",
            "model": {"vocab_size": data["vocab_size"]},
            "data": {"tokenizer": data["tokenizer"]},
            "train": {"seq_len": 64 + plan["rl_tokens"]},
            "schedule": {"lr": plan["rl_lr"], "min_lr": plan["rl_lr"]},
            "rl": {
                "init": str(workdir / "train" / f"decay-{branch}"),
                "prompts": {"path": data["corpus"]["rl"], "template": TEMPLATE, "max_prompt_tokens": 64},
                "rollout": {"max_response_tokens": plan["rl_tokens"], "temperature": plan["rl_temperature"]},
                "validation": {
                    "path": data["corpus"]["eval"],
                    "limit": plan["eval_items"],
                    "max_new_tokens": plan["eval_tokens"],
                    "interval": plan["rl_val_interval"],
                    "at_start": True,
                },
            },
        },
    )


def _validations(run_dir: Path) -> List[Dict[str, Any]]:
    """The run's greedy validations in step order: accuracy, standard error, and per-problem verdicts."""
    out = []
    for step_dir in sorted((run_dir / "validation").glob("step_*")):
        r = json.loads((step_dir / "results.json").read_text())["benchmarks"]["custom"]
        with open(step_dir / "predictions" / "custom.jsonl") as f:
            verdicts = {rec["id"]: bool(rec["correct"]) for rec in map(json.loads, f)}
        out.append(
            {"step": int(step_dir.name[5:]), **{k: r[k] for k in ("n", "correct", "accuracy", "stderr")}}
            | {"verdicts": verdicts}
        )
    return out


def _rl_summary(records: List[dict], validations: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Validation before / after with the paired standard error of the gain; the per-step curves."""
    from megatron_octo.eval.stats import paired_difference_standard_error

    first, last = validations[0], validations[-1]
    ids = sorted(first["verdicts"])
    gain_se = paired_difference_standard_error([first["verdicts"][i] for i in ids], [last["verdicts"][i] for i in ids])
    return {
        "steps": len(records),
        "responses_per_step": records[0]["responses"],
        "val_before": {k: first[k] for k in ("step", "n", "correct", "accuracy", "stderr")},
        "val_after": {k: last[k] for k in ("step", "n", "correct", "accuracy", "stderr")},
        "gain": last["accuracy"] - first["accuracy"],
        "gain_stderr": gain_se,
        "validation": [{k: v[k] for k in ("step", "accuracy", "stderr")} for v in validations],
        "reward": [r["reward_mean"] for r in records],
        "response_length": [r["response_length_mean"] for r in records],
        "logprob_mismatch_max": max(r["logprob_mismatch"] for r in records),
    }


def rl_stage(workdir: Path, data: Dict, plan: Dict) -> Dict:
    """GRPO from each branch of ``plan["rl_branches"]`` (side by side), with validation before and during."""
    runs = [
        (
            f"rl-{branch}",
            "rl",
            _rl_recipe(workdir, data, plan, branch),
            workdir / "rl" / branch,
            [f"train.iters={plan['rl_steps']}", *RL_GEOMETRY],
        )
        for branch in plan["rl_branches"]
    ]
    records = _octo_many(runs)
    return {
        f"decay-{branch}": _rl_summary(records[f"rl-{branch}"], _validations(workdir / "rl" / branch))
        | {"run_dir": f"rl/{branch}"}
        for branch in plan["rl_branches"]
    }


def run_demo(workdir: str, overwrite: bool = False, quick: bool = False, plan: Optional[Dict] = None) -> Path:
    """Run every stage into ``workdir``; return the path of ``report.md``. ``quick`` shrinks it for tests; ``plan``
    replaces entries of the plan (FULL or QUICK). ``summary.json``'s ``stage_seconds`` says where the time went."""
    import time

    from megatron_octo.demo_report import comparison, plot_comparison, report

    start = last = time.monotonic()
    stage_seconds: Dict[str, float] = {}

    def timed(name: str, value):
        nonlocal last
        stage_seconds[name], last = round(time.monotonic() - last, 1), time.monotonic()
        return value

    root, plan = Path(workdir), {**(QUICK if quick else FULL), **(plan or {})}
    _prepare(root, overwrite)
    data = timed("data", data_stage(root, plan))
    layouts = timed("layouts", layout_check(root, plan["layout_steps"]) if plan["layout_steps"] else None)
    summary: Dict[str, Any] = {
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
        "data": {k: data[k] for k in ("vocab_size", "documents", "tokens")},
        "train": {
            "layouts": layouts,
            "stable_then_decay": timed("stable_then_decay", stable_then_decay(root, data, plan)),
        },
    }
    summary["convert"] = timed("convert", convert_stage(root, data))
    summary["eval"] = timed("eval", eval_stage(root, data, plan))
    summary["rl"] = timed("rl", rl_stage(root, data, plan))
    summary["comparison"] = comparison(summary)
    plot_comparison(summary, root / "comparison.png")
    summary["seconds"], summary["stage_seconds"] = round(time.monotonic() - start, 1), stage_seconds
    # the wall-clock figure depends on what else the machine ran meanwhile: its size and load are recorded beside it
    summary["machine"] = {"cpus": os.cpu_count(), "jobs": _jobs(), "load_average_15min": round(os.getloadavg()[2], 2)}
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "report.md", report(summary))
    return root / "report.md"

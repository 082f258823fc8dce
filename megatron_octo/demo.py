"""``octo demo``: what megatron-octo can do, at toy scale on CPU, ending in a report.

Stages (each adds one top-level object to ``summary.json`` and a section to ``report.md``):
- ``data``: a generated math corpus in the recipe's four kinds, a BPE tokenizer trained on it, indexed datasets.
- ``train``: (1) ``tiny-cpu`` in one process and on TP=2 x PP=2 (4 processes), from the same layout-invariant
  initialization, so the loss curves must coincide; (2) a stable stage on the generated corpus and the three decay
  branches (Long, Short, Hybrid) branched from its checkpoint, each on its own mixture.
- ``convert``: each decayed branch exported to Hugging Face format and loaded back with transformers.
- ``eval``: each exported branch scored zero-shot on the corpus's held-out problems with the evaluation machinery.
- ``rl``: a short GRPO run (``octo rl``, transformers engine) from the Short branch on those held-out problems with
  the math reward; ``summary.json``'s ``rl`` holds ``reward_first`` / ``reward_last`` (means of the first and last
  five steps), the report shows the reward and accuracy curves.

Every training run is an ``octo train`` child process (under torchrun for several processes), exactly as a user
runs it. Outputs: ``WORKDIR/report.md`` with PNG plots beside it, ``WORKDIR/summary.json``, and the runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

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
    "rl_reward.png",
)
BRANCHES = ("long", "short", "hybrid")
LAYOUTS = {"single": (1, []), "tp2-pp2": (4, ["parallel.tp=2", "parallel.pp=2"])}
FULL: Dict[str, Any] = {
    "layout_steps": 20,
    "stable_steps": 700,
    "decay_steps": 60,
    "corpus": None,
    "eval_items": 50,
    "eval_tokens": 48,
    "rl_steps": 40,
    "rl_tokens": 16,
    "rl_lr": 1e-3,
}
"""700 stable steps of 2,048 tokens: about the point where the tiny model has half learned to copy a result into
``\\boxed{}`` (its RL prompts' one skill); at 300 it guesses, at 1,500 it is always right, so RL has nothing to do."""
QUICK: Dict[str, Any] = {
    "layout_steps": 3,
    "stable_steps": 4,
    "decay_steps": 2,
    "corpus": {"web": 40, "qa": 60, "long_cot": 40, "chat": 40, "eval": 20},
    "eval_items": 4,
    "eval_tokens": 8,
    "rl_steps": 2,
    "rl_tokens": 8,
    "rl_lr": 1e-3,
}
STAGE_GEOMETRY = {"global_batch": 16, "micro_batch": 8, "seq_len": 128}
"""Batch geometry of the demo's stable and decay stages: 2,048 tokens a step, enough for the tiny model to learn
the corpus's answer format in a few minutes."""
RL_BRANCH = "decay-short"
RL_GEOMETRY = ["rl.prompts_per_step=4", "rl.mini_batch_prompts=4", "rl.rollout.n=16"]
"""4 prompts x 16 samples a step: with rare successes, bigger groups give more of them a non-zero advantage."""
"""The branch the demo's RL stage starts from."""


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


def _octo(command: str, recipe: str, run_dir: Path, overrides: List[str], nproc: int = 1) -> List[dict]:
    """One ``octo train`` / ``octo rl`` child process (under torchrun for several), as a user runs it; its progress
    streams to this terminal. Returns its metrics."""
    octo = [sys.executable, "-m", "megatron_octo"]
    if nproc > 1:
        octo = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "megatron_octo",
        ]
    cmd = octo + [command, "--recipe", recipe, "--run-dir", str(run_dir), "logging.tensorboard=false", *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"[demo] octo {' '.join(cmd[cmd.index(command) :])}", flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"demo run failed (exit {result.returncode}): {' '.join(cmd)}")
    return read_metrics(run_dir / "metrics.jsonl")


def _octo_train(recipe: str, run_dir: Path, overrides: List[str], nproc: int = 1) -> List[dict]:
    return _octo("train", recipe, run_dir, overrides, nproc)


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


def data_stage(workdir: Path, sizes) -> Dict:
    """Generate the corpus, train the tokenizer, preprocess each kind into an indexed dataset."""
    from megatron_octo.data.demo_corpus import build_demo_data

    print("[demo] generating the math corpus, training its BPE tokenizer, preprocessing", flush=True)
    return build_demo_data(workdir / "data", sizes=sizes)


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
    """The stable stage on the generated corpus, then the three decay branches from its final checkpoint."""
    from megatron_octo.training.plot import plot_runs

    runs = workdir / "train"
    stable = _stage_recipe(workdir, "tiny-cpu-stable", "stable", data)
    records = {"stable": _octo_train(stable, runs / "stable", [f"train.iters={plan['stable_steps']}"])}
    for branch in BRANCHES:
        recipe = _stage_recipe(workdir, f"tiny-cpu-decay-{branch}", f"decay-{branch}", data)
        records[f"decay-{branch}"] = _octo_train(
            recipe,
            runs / f"decay-{branch}",
            [f"train.iters={plan['decay_steps']}", f"checkpoint.branch_from={runs / 'stable'}"],
        )
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


def eval_stage(workdir: Path, data: Dict, plan: Dict) -> Dict:
    """Score the exported branches on the held-out split of the generated corpus (zero-shot, \\boxed{} answers)."""
    from megatron_octo.eval import run_eval

    with open(data["corpus"]["eval"]) as f:
        items = [{"question": r["prompt"], "answer": r["answer"]} for r in map(json.loads, f)][: plan["eval_items"]]
    out = {}
    for branch in BRANCHES:
        print(f"[demo] evaluating decay-{branch} on {len(items)} held-out problems", flush=True)
        results = run_eval(
            str(workdir / "hf" / f"decay-{branch}"),
            items=items,
            zero_shot=True,
            max_new_tokens=plan["eval_tokens"],
            output_dir=str(workdir / "eval" / f"decay-{branch}"),
            show_progress=False,
            log=lambda line: None,
        )
        out[f"decay-{branch}"] = {"n": len(items), "accuracy": results["average"]}
    return out


def _moving_average(values: List[float], window: int) -> List[float]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    return [sum(values[max(0, i + 1 - window) : i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def _plot_rl(records: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    rewards, accuracy = [r["reward_mean"] for r in records], [100 * r["accuracy"] for r in records]
    ax_r.plot(steps, rewards, marker=".", alpha=0.6)
    ax_r.plot(steps, _moving_average(rewards, 10), "--", color="tab:blue")
    ax_r.set(xlabel="RL step", ylabel="mean reward", title="GRPO: reward")
    ax_a.plot(steps, accuracy, marker=".", color="tab:green", alpha=0.6)
    ax_a.plot(steps, _moving_average(accuracy, 10), "--", color="tab:green")
    ax_a.set(xlabel="RL step", ylabel="accuracy (%)", title="GRPO: correct answers")
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def rl_stage(workdir: Path, data: Dict, plan: Dict) -> Dict:
    """A short GRPO run from the Short branch on the corpus's RL prompts (identity problems with their worked steps;
    the response copies the result) with the math reward and the transformers engine."""
    recipe = _write_recipe(
        workdir / "recipes" / "tiny-cpu-grpo.yaml",
        {
            "base": "tiny-cpu-grpo",
            "model": {"vocab_size": data["vocab_size"]},
            "data": {"tokenizer": data["tokenizer"]},
            "schedule": {"lr": plan["rl_lr"], "min_lr": plan["rl_lr"]},
            "rl": {
                "init": str(workdir / "train" / RL_BRANCH),
                "prompts": {"path": data["corpus"]["rl"], "template": "User: {question}"},
            },
        },
    )
    records = _octo(
        "rl",
        recipe,
        workdir / "rl",
        [f"train.iters={plan['rl_steps']}", f"rl.rollout.max_response_tokens={plan['rl_tokens']}", *RL_GEOMETRY],
    )
    _plot_rl(records, workdir / "rl_reward.png")
    first, last = records[:5], records[-5:]
    mean = lambda part, key: sum(r[key] for r in part) / len(part)  # noqa: E731
    return {
        "start": RL_BRANCH,
        "steps": len(records),
        "responses_per_step": records[0]["responses"],
        "reward_first": mean(first, "reward_mean"),
        "reward_last": mean(last, "reward_mean"),
        "accuracy_first": mean(first, "accuracy"),
        "accuracy_last": mean(last, "accuracy"),
        "logprob_mismatch_max": max(r["logprob_mismatch"] for r in records),
        "run_dir": "rl",
        "plot": "rl_reward.png",
    }


def _report(summary: Dict) -> str:
    data, layouts, std = summary["data"], summary["train"]["layouts"], summary["train"]["stable_then_decay"]
    rl = summary["rl"]
    kinds = ", ".join(f"{k} {n:,} docs / {data['tokens'][k]:,} tokens" for k, n in data["documents"].items())
    layout_rows = "\n".join(
        f"| {n} | {r['first_loss']:.4f} | {r['final_loss']:.4f} | {r['tokens_per_s']:.0f} |"
        for n, r in layouts["runs"].items()
    )
    max_layout_diff = layouts["max_relative_loss_difference_between_layouts"]
    convert_rows = "\n".join(
        f"| {name} | `{c['hf_dir']}` | {c['parameters']:,} | {summary['eval'][name]['accuracy']:.1f}% "
        f"(n={summary['eval'][name]['n']}) |"
        for name, c in summary["convert"].items()
    )
    stage_rows = "\n".join(
        f"| {n} | {r['steps']} | {r['tokens']:,} | {r['first_loss']:.4f} | {r['final_loss']:.4f} "
        f"| {r['final_lr']:.2e} |"
        for n, r in std.items()
        if isinstance(r, dict)
    )
    return f"""# megatron-octo demo

## Data
Generated math corpus ({kinds}); BPE tokenizer of {data["vocab_size"]} tokens trained on it.

## Train: one run, two parallel layouts
Recipe `tiny-cpu`, {layouts["steps"]} steps, from the same initial weights on each layout.

| layout | first loss | final loss | tokens/s (CPU) |
|---|---|---|---|
{layout_rows}

Largest relative loss difference between layouts at any step: {max_layout_diff:.2e}.

![loss on two layouts]({layouts["plot"]})

## Train: Stable-then-Decay
The stable stage (constant LR, stable mixture), then the Long, Short and Hybrid decay branches from its last
checkpoint (cosine to 10% of the LR, each on its own mixture), as OctoThinker runs them at 200B + 20B tokens.

| run | steps | tokens | first loss | final loss | final LR |
|---|---|---|---|---|---|
{stage_rows}

![Stable-then-Decay]({std["plot"]})

## Convert and evaluate
Each decayed branch exported to Hugging Face format (loaded back with transformers) and scored zero-shot on the
held-out split of the generated corpus. Models this small and this briefly trained are not expected to solve the
problems: the numbers show the machinery end to end.

| branch | HF directory | parameters | accuracy |
|---|---|---|---|
{convert_rows}

## RL: GRPO from the {rl["start"]} branch
`octo rl` with the transformers rollout engine: {rl["steps"]} steps of {rl["responses_per_step"]:.0f} responses
(4 problems x 16 samples), the math reward (+1 correct, -1 wrong or no `\\boxed{{}}`), weights synced into the
engine after every update (largest engine/trainer log-prob mismatch {rl["logprob_mismatch_max"]:.5f}; 1 is exact).
The prompts are the corpus's identity problems (`What is 7 * 1?`) with their worked steps, so a response only has
to copy the result into a box: the one skill a model this size picks up in minutes of pre-training, and one it has
only partly learned after the stable and decay stages. RL turns the partly learned skill into a reliable one, in
miniature what OctoThinker reports at scale: mid-training leaves the skill within reach and RL makes it reliable
(dashed: 10-step moving average).

| | first 5 steps | last 5 steps |
|---|---|---|
| mean reward | {rl["reward_first"]:+.3f} | {rl["reward_last"]:+.3f} |
| accuracy | {100 * rl["accuracy_first"]:.1f}% | {100 * rl["accuracy_last"]:.1f}% |

![GRPO reward and accuracy]({rl["plot"]})
"""


def run_demo(workdir: str, overwrite: bool = False, quick: bool = False) -> Path:
    """Run every stage into ``workdir``; return the path of ``report.md``. ``quick`` shrinks it for tests."""
    root, plan = Path(workdir), QUICK if quick else FULL
    _prepare(root, overwrite)
    data = data_stage(root, plan["corpus"])
    summary = {
        "data": {k: data[k] for k in ("vocab_size", "documents", "tokens")},
        "train": {
            "layouts": layout_check(root, plan["layout_steps"]),
            "stable_then_decay": stable_then_decay(root, data, plan),
        },
    }
    summary["convert"] = convert_stage(root, data)
    summary["eval"] = eval_stage(root, data, plan)
    summary["rl"] = rl_stage(root, data, plan)
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "report.md", _report(summary))
    return root / "report.md"

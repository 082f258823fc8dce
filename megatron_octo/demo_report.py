"""The demo's comparison table, its figure and ``report.md``, made from ``summary.json``'s numbers only.

Every sentence that states a result is built from the measured values (which branch is ahead, by how many standard
errors, whether the paper's direction holds), so the report cannot say more than the numbers do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

MOVING_AVERAGE = 10
"""Window (RL steps) of the training-reward moving average."""
PAPER = (
    "RECIPE.md's published figures (3B: 13-benchmark mean after decay Long 45.5 / Short 46.8 / Hybrid 47.6; "
    "MATH500 after RL Long 65.2 / Hybrid 58.0 / Short 56.6)"
)


def moving_average(values: List[float], window: int = MOVING_AVERAGE) -> List[float]:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    return [sum(values[max(0, i + 1 - window) : i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def _tail_mean(values: List[float], k: int = 5) -> Optional[float]:
    return sum(values[-k:]) / len(values[-k:]) if values else None


def comparison(summary: Dict[str, Any]) -> Dict[str, Any]:
    """One row per branch (accuracy after decay few-shot / zero-shot, before / after RL, gain with its paired
    standard error, response lengths) and the paper's directions checked against the rows."""
    rows = []
    for name in (k for k in summary["convert"]):
        ev, rl = summary["eval"][name], summary["rl"].get(name)
        row: Dict[str, Any] = {
            "branch": name.removeprefix("decay-"),
            "few_shot": ev["few_shot"]["accuracy"],
            "few_shot_stderr": ev["few_shot"]["stderr"],
            "zero_shot": ev["zero_shot"]["accuracy"],
            "zero_shot_stderr": ev["zero_shot"]["stderr"],
            "response_tokens_decay": ev["zero_shot"]["response_tokens"],
            "rl_before": None,
            "rl_after": None,
            "rl_after_stderr": None,
            "gain": None,
            "gain_stderr": None,
            "gain_z": None,
            "response_tokens_rl_first": None,
            "response_tokens_rl_last": None,
        }
        if rl is not None:
            se = rl["gain_stderr"]
            row.update(
                rl_before=rl["val_before"]["accuracy"],
                rl_after=rl["val_after"]["accuracy"],
                rl_after_stderr=rl["val_after"]["stderr"],
                gain=rl["gain"],
                gain_stderr=se,
                gain_z=rl["gain"] / se if se > 0 else None,
                response_tokens_rl_first=rl["response_length"][0],
                response_tokens_rl_last=_tail_mean(rl["response_length"]),
            )
        rows.append(row)
    return {"table": rows, "checks": _checks(rows)}


def _check(claim: str, holds: Optional[bool], measured: str) -> Dict[str, Any]:
    return {"claim": claim, "holds": holds, "measured": measured}


def _checks(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The paper's directions, each with whether the measured rows follow it (None: not measurable here)."""
    by = {r["branch"]: r for r in rows}
    out = []
    if "long" in by and len(by) > 1:
        others = [r for b, r in by.items() if b != "long"]
        out.append(
            _check(
                "after decay (few-shot), the Long branch scores below the others",
                all(by["long"]["few_shot"] < r["few_shot"] for r in others),
                ", ".join(f"{r['branch']} {r['few_shot']:.1f}%" for r in rows),
            )
        )
    with_rl = [r for r in rows if r["rl_after"] is not None]
    if "long" in {r["branch"] for r in with_rl} and len(with_rl) > 1:
        long, others = by["long"], [r for r in with_rl if r["branch"] != "long"]
        out.append(
            _check(
                "after RL, the Long branch scores highest",
                all(long["rl_after"] > r["rl_after"] for r in others),
                ", ".join(f"{r['branch']} {r['rl_after']:.1f}%" for r in with_rl),
            )
        )
        out.append(
            _check(
                "RL gains most from the Long branch",
                all(long["gain"] > r["gain"] for r in others),
                ", ".join(f"{r['branch']} {r['gain']:+.1f}" for r in with_rl),
            )
        )
        out.append(
            _check(
                "the Long branch writes the longest responses during RL (long-CoT verbosity)",
                all(long["response_tokens_rl_last"] > r["response_tokens_rl_last"] for r in others),
                ", ".join(f"{r['branch']} {r['response_tokens_rl_last']:.0f} tokens" for r in with_rl),
            )
        )
    return out


def _fmt(value: Optional[float], se: Optional[float] = None, unit: str = "%") -> str:
    if value is None:
        return "not run"
    return f"{value:.1f}{unit}" + (f" ± {se:.1f}" if se is not None else "")


def comparison_table(cmp: Dict[str, Any]) -> str:
    head = (
        "| branch | few-shot after decay | zero-shot after decay | RL: val before | RL: val after | gain (paired SE) "
        "| response tokens: decay / RL first / RL last 5 |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in cmp["table"]:
        gain = "not run" if r["gain"] is None else f"{r['gain']:+.1f} ({r['gain_stderr']:.1f})"
        lengths = f"{r['response_tokens_decay']:.0f}"
        if r["response_tokens_rl_first"] is not None:
            lengths += f" / {r['response_tokens_rl_first']:.0f} / {r['response_tokens_rl_last']:.0f}"
        lines.append(
            f"| {r['branch']} | {_fmt(r['few_shot'], r['few_shot_stderr'])} | "
            f"{_fmt(r['zero_shot'], r['zero_shot_stderr'])} | {_fmt(r['rl_before'])} | "
            f"{_fmt(r['rl_after'], r['rl_after_stderr'])} | {gain} | {lengths} |"
        )
    return "\n".join(lines)


def findings(cmp: Dict[str, Any], chance: float) -> List[str]:
    """Sentences stating what the table shows, each computed from it."""
    rows, out = cmp["table"], []
    best = max(rows, key=lambda r: max(r["few_shot"], r["zero_shot"]))
    top = max(best["few_shot"], best["zero_shot"])
    out.append(
        f"Best held-out accuracy after decay: {best['branch']} with {top:.1f}% "
        f"({'above' if top > chance else 'not above'} the {chance:.0f}% a uniform guess of the answer would score)."
    )
    for r in (r for r in rows if r["gain"] is not None):
        z = r["gain_z"]
        size = "no measurable change" if z is None else f"{abs(z):.1f} paired standard errors"
        verdict = (
            "a significant gain"
            if z is not None and z > 3
            else ("a significant loss" if z is not None and z < -3 else "within noise (under 3 standard errors)")
        )
        out.append(
            f"RL from {r['branch']}: {r['rl_before']:.1f}% -> {r['rl_after']:.1f}% greedy on the held-out problems, "
            f"{r['gain']:+.1f} points, {size}: {verdict}; mean response length "
            f"{r['response_tokens_rl_first']:.0f} -> {r['response_tokens_rl_last']:.0f} tokens."
        )
    for c in cmp["checks"]:
        state = "matches" if c["holds"] else "does not match"
        out.append(f"Paper: {c['claim']}. Measured: {c['measured']}; this {state} the paper's direction.")
    return out


def plot_comparison(summary: Dict[str, Any], path: Path) -> None:
    """comparison.png: accuracy per branch (decay few-/zero-shot, after RL), validation accuracy, response length
    and training reward (with its moving average) over RL steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, rl = summary["comparison"]["table"], summary["rl"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    x, width = range(len(rows)), 0.27
    bars = [
        ("few_shot", "few_shot_stderr", "decay, few-shot"),
        ("zero_shot", "zero_shot_stderr", "decay, zero-shot"),
        ("rl_after", "rl_after_stderr", "after RL"),
    ]
    for k, (key, se, label) in enumerate(bars):
        vals = [float("nan") if r[key] is None else r[key] for r in rows]  # no bar where RL did not run
        ax.bar([i + (k - 1) * width for i in x], vals, width, yerr=[r[se] or 0.0 for r in rows], label=label, capsize=3)
    ax.set_xticks(list(x), [r["branch"] for r in rows])
    ax.set(ylabel="held-out accuracy (%)", title="accuracy by branch (± 1 SE)", ylim=(0, 100))
    for name, run in rl.items():
        label = name.removeprefix("decay-")
        v = run["validation"]
        axes[0][1].errorbar(
            [p["step"] for p in v],
            [p["accuracy"] for p in v],
            yerr=[p["stderr"] for p in v],
            marker="o",
            capsize=3,
            label=label,
        )
        steps = list(range(1, len(run["reward"]) + 1))
        axes[1][0].plot(steps, run["response_length"], label=label)
        line = axes[1][1].plot(steps, run["reward"], alpha=0.3)[0]
        axes[1][1].plot(steps, moving_average(run["reward"]), color=line.get_color(), label=f"{label} (moving avg)")
    axes[0][1].set(
        xlabel="RL step", ylabel="accuracy (%)", title="greedy validation on the held-out problems", ylim=(0, 100)
    )
    axes[1][0].set(xlabel="RL step", ylabel="tokens", title="mean response length")
    axes[1][1].set(xlabel="RL step", ylabel="mean reward", title=f"training reward ({MOVING_AVERAGE}-step moving avg)")
    for a in axes.flat:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _eval_rows(summary: Dict[str, Any]) -> str:
    ev = summary["eval"]
    lines = [
        "| branch | mode | accuracy ± SE | 95% Wilson interval | no answer | mean response tokens |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in summary["convert"]:
        for mode in ("few_shot", "zero_shot"):
            r = ev[name][mode]
            lines.append(
                f"| {name} | {mode.replace('_', '-')} | {r['accuracy']:.1f}% ± {r['stderr']:.1f} | "
                f"{r['ci95'][0]:.1f}-{r['ci95'][1]:.1f}% | {r['no_answer']} | {r['response_tokens']:.0f} |"
            )
    return "\n".join(lines)


def _layout_section(layouts: Optional[Dict[str, Any]]) -> str:
    if layouts is None:  # --quick leaves the layout check out
        return ""
    rows = "\n".join(
        f"| {n} | {r['first_loss']:.4f} | {r['final_loss']:.4f} | {r['tokens_per_s']:.0f} |"
        for n, r in layouts["runs"].items()
    )
    diff = layouts["max_relative_loss_difference_between_layouts"]
    return f"""## Train: one run, two parallel layouts
Recipe `tiny-cpu`, {layouts["steps"]} steps, from the same initial weights on each layout.

| layout | first loss | final loss | tokens/s (CPU) |
|---|---|---|---|
{rows}

Largest relative loss difference between layouts at any step: {diff:.2e}.

![loss on two layouts]({layouts["plot"]})

"""


def report(summary: Dict[str, Any]) -> str:
    """report.md, every figure and sentence from ``summary``."""
    data, layouts, std = summary["data"], summary["train"]["layouts"], summary["train"]["stable_then_decay"]
    plan, ev, cmp = summary["plan"], summary["eval"], summary["comparison"]
    task = plan["task"]
    chance = 100.0 / (task["max_value"] + 1)
    kinds = ", ".join(f"{k} {n:,} docs / {data['tokens'][k]:,} tokens" for k, n in data["documents"].items())
    stage_rows = "\n".join(
        f"| {n} | {r['steps']} | {r['tokens']:,} | {r['first_loss']:.4f} | {r['final_loss']:.4f} "
        f"| {r['final_lr']:.2e} |"
        for n, r in std.items()
        if isinstance(r, dict)
    )
    convert_rows = "\n".join(
        f"| {name} | `{c['hf_dir']}` | {c['architecture']} | {c['parameters']:,} |"
        for name, c in summary["convert"].items()
    )
    rl_runs = summary["rl"]
    rl_steps = next(iter(rl_runs.values()))["steps"] if rl_runs else 0
    mismatch = max((r["logprob_mismatch_max"] for r in rl_runs.values()), default=1.0)
    found = "\n".join(f"- {s}" for s in findings(cmp, chance))
    return f"""# megatron-octo demo: OctoThinker in miniature

Measured in {summary["seconds"] / 60:.1f} minutes. Every number below comes from `summary.json`; the sentences are
generated from them.

## Findings
{found}

## The comparison
Held-out accuracy on the same {ev["n"]} problems (± one standard error; RL columns greedy with the RL template;
the gain's standard error is paired: the same problems before and after).

{comparison_table(cmp)}

![comparison of the branches](comparison.png)

## Data: a task the tiny model can learn
Chains of {task["min_ops"]}-{task["max_ops"]} additions and subtractions with every number in 0..{task["max_value"]}
(`What is 7 + 2 - 5?` solved as `7 + 2 = 9. 9 - 5 = 4.`), split by a hash of the question into training, held-out
evaluation and RL problems that never overlap. A uniform guess of the answer scores {chance:.0f}%. Written as the
recipe's four kinds of data ({kinds}); BPE tokenizer of {data["vocab_size"]} tokens trained on them. The web pages
work chains in prose or as `Q:`/`A:` exercises without `\\boxed{{}}`; Short (QA) data answers in one line per step;
Long data thinks at length in `<think>` (steps restated, then checked by undoing them), about three times the tokens.

{_layout_section(layouts)}## Train: Stable-then-Decay
The stable stage (constant LR, the web-heavy stable mixture), then the Long, Short and Hybrid decay branches from its
last checkpoint (cosine to 10% of the LR, each on its own mixture), as OctoThinker runs them at 200B + 20B tokens.

| run | steps | tokens | first loss | final loss | final LR |
|---|---|---|---|---|---|
{stage_rows}

![Stable-then-Decay]({std["plot"]})

## Convert and evaluate
Each decayed branch exported to Hugging Face format and loaded back with transformers:

| branch | HF directory | architecture | parameters |
|---|---|---|---|
{convert_rows}

Scored by `megatron_octo.eval` (math-verify) on the held-out problems: few-shot with the 4-shot `Q:`/`A:` prompt set
`{ev["prompt_set"]}` (answers read as "The answer is N"), zero-shot with the RL template `{ev["template"]}` (answers
from the last `\\boxed{{}}`), greedy, at most {plan["eval_tokens"]} new tokens.

{_eval_rows(summary)}

## RL: GRPO from {", ".join(n.removeprefix("decay-").capitalize() for n in rl_runs) or "no branch"}
`octo rl` with the transformers rollout engine from each decayed checkpoint: {rl_steps} steps of 8 RL-split problems
x 8 samples, the math reward (+1 correct, -1 wrong or no `\\boxed{{}}`), LR {plan["rl_lr"]:g}, weights synced into the
engine after every update (largest engine/trainer log-prob mismatch {mismatch:.5f}; 1 is exact). Greedy validation
on the held-out problems before the first step and every {plan["rl_val_interval"]} steps; the figure above shows
it, the mean response length, and the training reward with its {MOVING_AVERAGE}-step moving average.

Reference: {PAPER}.
"""

"""The demo's comparison table, its figure and ``report.md``, made from ``summary.json``'s numbers only.

Every sentence that states a result is built from the measured values (which branch is ahead, by how many standard
errors, whether the paper's direction holds), so the report cannot say more than the numbers do.
"""

from __future__ import annotations

import math
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
            "zero_shot_no_answer": ev["zero_shot"].get("no_answer", 0),
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
    """``holds``: True / False, or None where the branches tie (nothing to compare)."""
    return {"claim": claim, "holds": holds, "measured": measured}


LENGTH_TIE = 0.10
"""Mean response lengths within this fraction of each other count as equal (no standard error is kept for them)."""


def _long_ahead(rows: List[Dict[str, Any]], key: str, se_key: Optional[str], higher: bool = True) -> Optional[bool]:
    """Whether the Long row's ``key`` is above (``higher``) or below every other row's: True / False, or None when
    the nearest other row is within noise (2 standard errors of the difference; for lengths ``LENGTH_TIE``)."""
    long = next(r for r in rows if r["branch"] == "long")
    others = [r for r in rows if r["branch"] != "long"]
    nearest = (max if higher else min)(others, key=lambda r: r[key])
    diff = long[key] - nearest[key]
    if se_key is None:
        noise = LENGTH_TIE * max(abs(long[key]), abs(nearest[key]))
    else:
        noise = 2.0 * math.sqrt(long[se_key] ** 2 + nearest[se_key] ** 2)
    if abs(diff) <= noise:
        return None
    return diff > 0 if higher else diff < 0


def _checks(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The paper's directions, each with whether the measured rows follow it (None: within noise)."""
    out = []
    if "long" in {r["branch"] for r in rows} and len(rows) > 1:
        out.append(
            _check(
                "after decay (few-shot), the Long branch scores below the others",
                _long_ahead(rows, "few_shot", "few_shot_stderr", higher=False),
                ", ".join(f"{r['branch']} {r['few_shot']:.1f}%" for r in rows),
            )
        )
    with_rl = [r for r in rows if r["rl_after"] is not None]
    if "long" in {r["branch"] for r in with_rl} and len(with_rl) > 1:
        claims = [
            ("after RL, the Long branch scores highest", "rl_after", "rl_after_stderr", "{:.1f}%"),
            ("RL gains most from the Long branch", "gain", "gain_stderr", "{:+.1f}"),
            (
                "the Long branch writes the longest responses during RL (long-CoT verbosity)",
                "response_tokens_rl_last",
                None,
                "{:.0f} tokens",
            ),
        ]
        for claim, key, se_key, fmt in claims:
            measured = ", ".join(f"{r['branch']} {fmt.format(r[key])}" for r in with_rl)
            out.append(_check(claim, _long_ahead(with_rl, key, se_key), measured))
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
    for r in rows:  # the RL template against the few-shot prompt, where they differ beyond noise
        noise = 2.0 * math.sqrt(r["few_shot_stderr"] ** 2 + r["zero_shot_stderr"] ** 2)
        if abs(r["zero_shot"] - r["few_shot"]) > noise:
            side = "below" if r["zero_shot"] < r["few_shot"] else "above"
            out.append(
                f"{r['branch']}: zero-shot with the RL template {r['zero_shot']:.1f}%, {side} its few-shot "
                f"{r['few_shot']:.1f}% beyond 2 standard errors ({r['zero_shot_no_answer']} responses without an "
                f"answer; mean zero-shot response {r['response_tokens_decay']:.0f} tokens)."
            )
    for r in (r for r in rows if r["gain"] is not None):
        z = r["gain_z"]
        size = "no measurable change" if z is None else f"{abs(z):.1f} paired standard errors"
        if r["rl_before"] >= 100.0:
            verdict = "no room to gain: already 100% before RL"
        elif z is not None and abs(z) > 3:
            verdict = "a gain beyond 3 standard errors" if z > 0 else "a loss beyond 3 standard errors"
        else:
            verdict = "within noise (under 3 standard errors)"
        out.append(
            f"RL from {r['branch']}: {r['rl_before']:.1f}% -> {r['rl_after']:.1f}% greedy on the held-out problems, "
            f"{r['gain']:+.1f} points, {size}: {verdict}; mean response length "
            f"{r['response_tokens_rl_first']:.0f} -> {r['response_tokens_rl_last']:.0f} tokens."
        )
    for c in cmp["checks"]:
        state = {
            True: "this matches the paper's direction",
            False: "this does not match the paper's direction",
            None: "the difference is within noise, so it neither matches nor contradicts the paper's direction",
        }[c["holds"]]
        out.append(f"Paper: {c['claim']}. Measured: {c['measured']}; {state}.")
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


def _machine(summary: Dict[str, Any]) -> str:
    m = summary.get("machine") or {}
    if not m:
        return "this machine"
    return f"{m['cpus']} CPU cores ({m['jobs']} runs side by side; 15-minute load average {m['load_average_15min']})"


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

Measured in {summary["seconds"] / 60:.1f} minutes on {_machine(summary)}. Every number below comes from
`summary.json`; the sentences are generated from them.

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
x 8 samples at temperature {plan.get("rl_temperature", 1.0):g}, the math reward (+1 correct, -1 wrong or no
`\\boxed{{}}`), LR {plan["rl_lr"]:g}, weights synced into the engine after every update (largest engine/trainer
log-prob mismatch {mismatch:.5f}; 1 is exact). Greedy validation on the held-out problems before the first step
and every {plan["rl_val_interval"]} steps; the figure above shows it, the mean response length, and the training
reward with its {MOVING_AVERAGE}-step moving average.

Reference: {PAPER}.
"""

"""``octo data audit``: does training read the mixture it asks for?

Builds the recipe's blend exactly as training does (``data.blend.build_blend`` with the training's sample count,
or more when more samples are audited), reads its first N samples in training order, and compares each source's
share of the tokens read with its target weight. Output: a table, a PNG bar chart, and a verdict against a
tolerance in percentage points (1 point by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from megatron_octo.config.schema import RecipeConfig

TOLERANCE_PT = 1.0
"""Largest accepted |realized - target| share, in percentage points."""


@dataclass
class SourceShare:
    """One source's target and realized share of the tokens read."""

    name: str
    target: float
    realized: float
    tokens: int
    samples: int

    @property
    def diff_pt(self) -> float:
        return 100.0 * (self.realized - self.target)


@dataclass
class AuditResult:
    """The audit of one recipe's first ``samples`` training samples."""

    recipe: str
    samples: int
    seq_len: int
    training_samples: int
    """Samples the training run reads (``iters * global_batch``)."""
    mixture: str = "inline sources"
    """The recipe's ``data.mixture``, or ``inline sources``."""
    rows: List[SourceShare] = field(default_factory=list)

    @property
    def max_diff_pt(self) -> float:
        return max(abs(r.diff_pt) for r in self.rows)

    def ok(self, tolerance_pt: float = TOLERANCE_PT) -> bool:
        return self.max_diff_pt <= tolerance_pt


def audit(recipe: RecipeConfig, samples: int = 10_000) -> AuditResult:
    """Target vs realized token share per source over the first ``samples`` samples training would read."""
    from megatron_octo.config.validate import train_iters
    from megatron_octo.data.blend import build_blend
    from megatron_octo.data.errors import DataError

    if recipe.data.kind != "blend":
        raise DataError(
            f"recipe {recipe.name} has data.kind={recipe.data.kind}: the audit needs data.kind=blend "
            f"(set data.mixture or data.sources)"
        )
    if samples < 1:
        raise DataError(f"--samples {samples} must be >= 1")
    training = train_iters(recipe) * recipe.train.global_batch
    blend = build_blend(recipe, max(samples, training))
    tokens = [0] * len(blend.sources)
    counts = [0] * len(blend.sources)
    for i in range(samples):
        source = blend.source_of(i)
        tokens[source] += blend[i].numel()  # seq_len + 1: the train split drops partial samples, so no padding
        counts[source] += 1
    total = sum(tokens)
    rows = [
        SourceShare(s.name, float(s.weight), tokens[k] / total, tokens[k], counts[k])
        for k, s in enumerate(blend.sources)
    ]
    return AuditResult(
        recipe.name, samples, recipe.train.seq_len, training, recipe.data.mixture or "inline sources", rows
    )


def format_table(result: AuditResult, tolerance_pt: float = TOLERANCE_PT) -> str:
    """The audit as a fixed-width table with a verdict line."""
    width = max(len("source"), *(len(r.name) for r in result.rows))
    lines = [
        f"mixture audit: recipe {result.recipe} ({result.mixture}), first {result.samples:,} samples of "
        f"{result.seq_len + 1} tokens (training reads {result.training_samples:,})",
        f"{'source':<{width}}  {'target':>8}  {'realized':>8}  {'diff(pt)':>8}  {'samples':>9}  {'tokens':>12}",
    ]
    for r in result.rows:
        lines.append(
            f"{r.name:<{width}}  {100 * r.target:7.2f}%  {100 * r.realized:7.2f}%  {r.diff_pt:+8.2f}  "
            f"{r.samples:9,}  {r.tokens:12,}"
        )
    verdict = "ok" if result.ok(tolerance_pt) else "OUT OF TOLERANCE"
    lines.append(f"max |diff| {result.max_diff_pt:.2f} pt (tolerance {tolerance_pt:g} pt): {verdict}")
    if result.samples > result.training_samples:
        lines.append(
            f"note: the audit reads more samples than training ({result.training_samples:,}); the blend "
            f"was built for {result.samples:,}"
        )
    return "\n".join(lines)


def plot(result: AuditResult, path: Path) -> Path:
    """Grouped bars of target and realized share per source, written to ``path`` (PNG) via a temporary name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in result.rows]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4.5))
    ax.bar([x - 0.2 for x in xs], [100 * r.target for r in result.rows], width=0.4, label="target")
    ax.bar([x + 0.2 for x in xs], [100 * r.realized for r in result.rows], width=0.4, label="realized")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set(
        ylabel="share of tokens (%)",
        title=f"{result.recipe} ({result.mixture}): first {result.samples:,} samples, "
        f"max |diff| {result.max_diff_pt:.2f} pt",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def default_plot_path(recipe: RecipeConfig) -> Path:
    """``mixture-audit-<recipe>.png`` in the working directory."""
    return Path(f"mixture-audit-{Path(recipe.name).stem}.png")


def run_audit(recipe: RecipeConfig, samples: int, plot_path: Optional[Path], overwrite: bool) -> AuditResult:
    """The CLI's work: refuse an existing plot without ``overwrite``, audit, print the table, write the plot."""
    from megatron_octo.utils.io import OutputExistsError

    plot_path = Path(plot_path) if plot_path else default_plot_path(recipe)
    if plot_path.exists() and not overwrite:
        raise OutputExistsError(f"{plot_path} already exists: pass --overwrite or another --plot")
    result = audit(recipe, samples)
    print(format_table(result))
    print(f"bar chart: {plot(result, plot_path)}")
    return result

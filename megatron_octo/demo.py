"""``octo demo``: what megatron-octo can do, at toy scale on CPU, ending in a report.

Stages so far:
- ``train``: the ``tiny-cpu`` recipe in one process and on a TP=2 x PP=2 layout (4 processes under torchrun),
  both from the same layout-invariant initialization, so their loss curves must coincide.

Outputs in the work directory: ``report.md`` with PNG plots beside it, ``summary.json`` (one object per stage),
and each run's directory under ``train/``. Later stages (convert, eval, rl) extend the same structure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from megatron_octo.training.metrics import read_metrics
from megatron_octo.utils.io import OutputExistsError, atomic_write_text

DEMO_OUTPUTS = ("report.md", "summary.json", "train", "train_loss.png")
DEMO_RECIPE = "tiny-cpu"
DEMO_STEPS = 30
LAYOUTS = {
    "single": (1, []),
    "tp2-pp2": (4, ["parallel.tp=2", "parallel.pp=2"]),
}


def _prepare(workdir: Path, overwrite: bool) -> None:
    existing = [name for name in DEMO_OUTPUTS if (workdir / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{workdir} already holds demo outputs ({', '.join(existing)}): pass --overwrite or another --workdir"
        )
    for name in existing:
        path = workdir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    workdir.mkdir(parents=True, exist_ok=True)


def _train(run_dir: Path, nproc: int, overrides: List[str], steps: int) -> None:
    """One ``octo train`` run in a child process (under torchrun for several processes); its progress streams."""
    octo = [sys.executable, "-m", "megatron_octo"]
    if nproc > 1:
        octo = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "-m", "megatron_octo"]
    cmd = octo + ["train", "--recipe", DEMO_RECIPE, "--run-dir", str(run_dir), f"train.iters={steps}"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"[demo] {' '.join(cmd[1:])}", flush=True)
    result = subprocess.run(cmd + overrides, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"demo training run failed (exit {result.returncode}): {' '.join(cmd + overrides)}")


def _plot_losses(curves: Dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, records), style in zip(curves.items(), ("-", "--", ":")):
        steps = [r["step"] for r in records]
        ax_loss.plot(steps, [r["loss"] for r in records], style, label=name)
        ax_lr.plot(steps, [r["lr"] for r in records], style, label=name)
    ax_loss.set(xlabel="step", ylabel="loss", title=f"{DEMO_RECIPE}: training loss")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def train_stage(workdir: Path, steps: int = DEMO_STEPS) -> Dict:
    """Train on each layout; return the stage's figures (final losses, throughput, layout agreement)."""
    curves = {}
    for name, (nproc, overrides) in LAYOUTS.items():
        _train(workdir / "train" / name, nproc, overrides + ["logging.tensorboard=false"], steps)
        curves[name] = read_metrics(workdir / "train" / name / "metrics.jsonl")
    _plot_losses(curves, workdir / "train_loss.png")
    ref = curves["single"]
    max_rel = max(
        abs(a["loss"] - b["loss"]) / abs(a["loss"]) for other in curves.values() for a, b in zip(ref, other)
    )
    return {
        "recipe": DEMO_RECIPE,
        "steps": steps,
        "tokens": ref[-1]["tokens"],
        "runs": {
            name: {"first_loss": recs[0]["loss"], "final_loss": recs[-1]["loss"],
                   "tokens_per_s": sum(r["tokens_per_s"] for r in recs[1:]) / max(len(recs) - 1, 1)}
            for name, recs in curves.items()
        },
        "max_relative_loss_difference_between_layouts": max_rel,
        "plot": "train_loss.png",
    }


def _report(summary: Dict) -> str:
    train = summary["train"]
    rows = "\n".join(
        f"| {name} | {r['first_loss']:.4f} | {r['final_loss']:.4f} | {r['tokens_per_s']:.0f} |"
        for name, r in train["runs"].items()
    )
    return f"""# megatron-octo demo

## Train

Recipe `{train['recipe']}` ({train['steps']} steps, {train['tokens']:,} tokens), the same run on each layout.

| layout | first loss | final loss | tokens/s (CPU) |
|---|---|---|---|
{rows}

Largest relative loss difference between layouts at any step: {train['max_relative_loss_difference_between_layouts']:.2e}
(same initial weights on every layout; fp32 reduction order is the only difference).

![training loss and learning rate]({train['plot']})
"""


def run_demo(workdir: str, overwrite: bool = False, steps: int = DEMO_STEPS) -> Path:
    """Run every stage into ``workdir``; return the path of ``report.md``. ``steps`` shortens it for tests."""
    root = Path(workdir)
    _prepare(root, overwrite)
    summary = {"train": train_stage(root, steps)}
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "report.md", _report(summary))
    return root / "report.md"

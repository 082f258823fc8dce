"""The checks at the end of smoke_1gpu.sh: ``python smoke_check.py RESULTS``, RESULTS holding the ``ppo``,
``reinforce`` and ``critic`` log folders NeMo's exp_manager wrote (TensorBoard events: NeMo-Aligner's trainers log
through them). Prints each figure and "smoke_1gpu: PASS", or one line per failed check and exits 1.

Checked, as tests/aligner/test_ppo_step.py checks on CPU: both actors logged two steps of rollouts whose rewards
are not all the same value, with a share of properly ended samples (NeMo-Aligner's ``is_end``) above 0 at each step;
the critic logged a training loss; each actor saved a step-2 checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List


def scalars(folder: Path) -> Dict[str, List[float]]:
    """tag -> values in step order, over every TensorBoard event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Dict[str, List[float]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.step))
    return out


def check(results: Path) -> List[str]:
    """The failed checks, as one line each (empty: all hold)."""
    failed = []
    for algo in ("ppo", "reinforce"):
        logged = scalars(results / algo)
        rewards = logged.get("train_rollouts/rewards", [])
        ended = logged.get("train_rollouts/fraction_of_samples_properly_ended", [])
        print(f"{algo}: mean rewards {rewards}, properly ended {ended}")
        if len(rewards) != 2 or len(ended) != 2:
            failed.append(f"{algo}: {len(rewards)} steps of rollouts logged, not 2 (see {results / algo})")
            continue
        if all(r in (-1.0, 1.0) for r in rewards) and len(set(rewards)) == 1:
            failed.append(f"{algo}: every reward was {rewards[0]}: the reward server's scores do not vary")
        if min(ended) <= 0:
            failed.append(f"{algo}: no properly ended samples at a step ({ended}): check the end strings")
        if not list((results / algo / "checkpoints").glob("*step=2*")):
            failed.append(f"{algo}: no step-2 checkpoint under {results / algo / 'checkpoints'}")
    critic_loss = scalars(results / "critic").get("train/loss", [])
    print(f"critic: training losses {critic_loss}")
    if not critic_loss:
        failed.append(f"critic: no training loss logged (see {results / 'critic'})")
    return failed


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python smoke_check.py RESULTS", file=sys.stderr)
        return 2
    failed = check(Path(argv[0]))
    for line in failed:
        print(f"smoke_1gpu: FAIL: {line}", file=sys.stderr)
    if not failed:
        print("smoke_1gpu: PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

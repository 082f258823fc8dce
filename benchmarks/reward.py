#!/usr/bin/env python
"""Throughput of the RL math reward on MATH500-style responses: verified answers per second, three ways in one run.

The responses are built from MATH500's 500 reference solutions (shared/data/eval/math500_test.jsonl), ten kinds per
problem, cycling over the problems until ``--n`` responses (default 5,000):

- 4 in 10: the reference solution as is (its last ``\\boxed{}`` is the gold answer: +1);
- 2 in 10: the same with the boxed answer written differently but equivalently (``\\frac`` -> ``\\dfrac`` or
  ``\\tfrac``, or the answer wrapped in extra brace groups), so that math-verify has to prove it (+1);
- 3 in 10: the solution with another problem's answer in its box (-1 unless the answers coincide);
- 1 in 10: the solution with its box removed (-1).

Compared on the same responses: ``in-process`` (``reward_task`` called in a loop in this process: one core, no
isolation and no time limit - the baseline), and ``MathReward`` with 1 and with ``--workers`` worker processes
(each verification under the hard 2 s limit). Each mode runs ``--repeats`` times, interleaved, and its best time
counts. The rewards must agree with the baseline except where a verification hit the limit; exits 1 if not.

    python benchmarks/reward.py                      # 5,000 responses, 2 workers
    python benchmarks/reward.py --n 1000 --workers 4 --data-dir /path/to/shared/data

Wall-clock figures depend on what else runs on the machine: run it quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_octo.eval.extraction import last_boxed  # noqa: E402
from megatron_octo.eval.scoring import quick_judge  # noqa: E402
from megatron_octo.rl.reward import MathReward, reward_task  # noqa: E402

KINDS = ("gold",) * 4 + ("equivalent",) * 2 + ("wrong",) * 3 + ("unboxed",)


def _replace_last_box(solution: str, content: str) -> str:
    """The solution with the content of its last ``\\boxed{...}`` replaced by ``content``."""
    begin = solution.rfind("\\boxed{") + len("\\boxed{")
    depth, end = 1, begin
    while depth:
        depth += {"{": 1, "}": -1}.get(solution[end], 0)
        end += 1
    return solution[:begin] + content + solution[end - 1:]


def _equivalent(answer: str, variant: int) -> str:
    """Two different rewritings of ``answer`` that mean the same."""
    if "\\frac" in answer:
        return answer.replace("\\frac", "\\dfrac" if variant == 0 else "\\tfrac")
    return "{" * (variant + 1) + answer + "}" * (variant + 1)


def build_responses(rows, n: int):
    """``n`` (response, gold, kind) triples, deterministic (see the module docstring). No (answer, gold) pair that
    needs math-verify repeats, so the reward's de-duplication does not flatter the figures."""
    out = []
    for i in range(n):
        k, rep = i % len(rows), i // len(rows)
        kind = KINDS[rep % len(KINDS)]
        sol, gold = rows[k]["solution"], rows[k]["answer"]
        if kind == "equivalent":
            sol = _replace_last_box(sol, _equivalent(last_boxed(sol), rep % 2))
        elif kind == "wrong":
            sol = _replace_last_box(sol, rows[(k + 1 + 97 * (rep % 3)) % len(rows)]["answer"])
        elif kind == "unboxed":
            sol = re.sub(r"\\boxed\{", "{", sol)
        out.append((sol, gold, kind))
    return out


def _time(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _run_mode(workers, responses, golds, timeout):
    """(rewards, seconds, verifications that hit the limit): in this process when ``workers`` is None."""
    if workers is None:
        out, secs = _time(lambda: [reward_task("default", r, g) for r, g in zip(responses, golds)])
        return out, secs, 0
    with MathReward(workers=workers, timeout=timeout) as reward:
        reward(responses[:workers * 4], golds[:workers * 4])  # start the workers outside the timing
        before = reward.pool.stats["timeouts"]
        out, secs = _time(lambda: reward(responses, golds))
        return out, secs, reward.pool.stats["timeouts"] - before


def run(args) -> int:
    path = Path(args.data_dir) / "eval" / "math500_test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    triples = build_responses(rows, args.n)
    responses, golds = [t[0] for t in triples], [t[1] for t in triples]
    to_sympy = len({(last_boxed(r), g) for r, g in zip(responses, golds)
                    if quick_judge("math", last_boxed(r), g) is None})
    print(f"{len(triples)} responses from {len(rows)} MATH500 solutions; {to_sympy} need math-verify, the rest are "
          f"decided without sympy (identical answers, no box)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, Python "
          f"{platform.python_version()}, {platform.machine()}")
    modes = {"in-process (1 core, no limit)": None}
    modes.update({f"MathReward, {w} worker{'s' if w > 1 else ''}": w for w in sorted({1, args.workers})})
    results, runs = {name: None for name in modes}, {name: [] for name in modes}
    for _ in range(args.repeats):  # interleaved; the best time of each mode counts (the machine is shared)
        for name, workers in modes.items():
            out, secs, timeouts = _run_mode(workers, responses, golds, args.timeout)
            runs[name].append(secs)
            if results[name] is None or secs < results[name][1]:
                results[name] = (out, secs, timeouts)
    baseline = results["in-process (1 core, no limit)"][0]
    limited = max(t for _, _, t in results.values())
    print("\n| mode | seconds (runs) | responses/s, best | +1 | -1 | hit the limit |\n|---|---|---:|---:|---:|---:|")
    for name, (out, secs, timeouts) in results.items():
        print(f"| {name} | {' / '.join(f'{t:.1f}' for t in runs[name])} | {len(out) / secs:.0f} | "
              f"{out.count(1.0)} | {out.count(-1.0)} | {timeouts} |")
    # a verification abandoned at the limit scores -1 where the unlimited baseline may have finished it
    worst = max(sum(a != b for a, b in zip(out, baseline)) for out, _, _ in results.values())
    print(f"\nrewards differing from the baseline: at most {worst} (verifications that hit the limit: {limited})")
    return 0 if worst <= limited else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="responses (default: 5000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the pooled run (default: 2)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per verification (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, interleaved; best counts "
                                                                "(default: 2)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="shared data directory holding eval/math500_test.jsonl (default: ../shared/data)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())

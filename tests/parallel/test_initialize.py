"""``parallel.initialize`` in subprocesses (torch.distributed is never initialized in the pytest process).

The expected grids are worked out by hand from Megatron-Core's default rank order tp-cp-ep-dp-pp (tp varies
fastest): with cp = ep = 1, ``rank = tp_rank + tp * (dp_rank + dp * pp_rank)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # 4 ranks starting Megatron-Core on 2 busy cores can take minutes
# Variables a torchrun launch (or an earlier in-process world of one) may have left in this environment.
_LAUNCH_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
)

SCRIPT = r'''
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

from megatron_octo import parallel
from megatron_octo.config.schema import ParallelConfig


def describe(ctx):
    return dict(
        rank=ctx.rank, world=ctx.world_size, tp_rank=ctx.tp_rank, pp_rank=ctx.pp_rank, cp_rank=ctx.cp_rank,
        dp_rank=ctx.dp_rank, dp=ctx.dp, backend=ctx.backend, cpu_compat=ctx.cpu_compat, device=str(ctx.device),
        first=ctx.is_first_stage, last=ctx.is_last_stage, main=ctx.is_main,
    )


result = {}
layouts = json.loads(sys.argv[1])
for i, (tp, pp) in enumerate(layouts):
    try:
        ctx = parallel.initialize(ParallelConfig(tp=tp, pp=pp), seed=1234, timeout_s=120)
    except parallel.ParallelSetupError as exc:
        result[f"{tp}x{pp}"] = {"error": str(exc)}
        continue
    result[f"{tp}x{pp}"] = describe(ctx)
    if i < len(layouts) - 1:
        # Keep the default process group for the next layout; drop only Megatron-Core's groups.
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
    else:
        parallel.destroy(ctx)
result["launch_rank"] = int(os.environ.get("RANK", "0"))
result["rank_in_env"] = "RANK" in os.environ
# One write call per line: print() may write the text and the newline separately, and 4 ranks share the pipe.
os.write(1, ("RESULT " + json.dumps(result) + "\n").encode())
'''


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(tmp_path: Path, launcher: list, layouts: list) -> list:
    script = tmp_path / "init_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        launcher + [str(script), json.dumps(layouts)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    results = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return sorted(results, key=lambda r: r["launch_rank"])


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    """One torchrun launch of 4 processes that goes through three layouts in turn: tp=3 (cannot fit 4 processes),
    tp=1 x pp=2 (DP 2), tp=2 x pp=2 (DP 1)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
    return _run(tmp_path_factory.mktemp("init4"), launcher, [[3, 1], [1, 2], [2, 2]])


def _grid(results, layout):
    return [
        (r[layout]["rank"], r[layout]["tp_rank"], r[layout]["pp_rank"], r[layout]["dp_rank"]) for r in results
    ]


def test_tp2_pp2_grid(four_ranks):
    assert len(four_ranks) == 4
    # (rank, tp_rank, pp_rank, dp_rank): ranks 0, 1 are pipeline stage 0 with TP ranks 0, 1; ranks 2, 3 stage 1.
    assert _grid(four_ranks, "2x2") == [(0, 0, 0, 0), (1, 1, 0, 0), (2, 0, 1, 0), (3, 1, 1, 0)]
    for r in four_ranks:
        ctx = r["2x2"]
        assert (ctx["world"], ctx["dp"], ctx["cp_rank"]) == (4, 1, 0)
        assert ctx["backend"] == "gloo"
        assert ctx["cpu_compat"] is True
        assert ctx["device"] == "cpu"
        assert (ctx["first"], ctx["last"]) == (ctx["pp_rank"] == 0, ctx["pp_rank"] == 1)
        assert ctx["main"] is (ctx["rank"] == 0)


def test_tp1_pp2_grid_has_two_data_parallel_ranks(four_ranks):
    # tp=1: rank = dp_rank + 2 * pp_rank.
    assert _grid(four_ranks, "1x2") == [(0, 0, 0, 0), (1, 0, 0, 1), (2, 0, 1, 0), (3, 0, 1, 1)]
    assert {r["1x2"]["dp"] for r in four_ranks} == {2}


def test_tp3_on_four_processes_is_a_one_line_setup_error(four_ranks):
    for r in four_ranks:
        message = r["3x1"]["error"]
        assert "\n" not in message
        assert "world size 4" in message
        assert "parallel.tp*pp*cp" in message
        assert "3" in message


def test_world_of_one_without_torchrun(tmp_path):
    (result,) = _run(tmp_path, [sys.executable], [[1, 1]])
    ctx = result["1x1"]
    assert (ctx["rank"], ctx["world"], ctx["tp_rank"], ctx["pp_rank"], ctx["dp_rank"], ctx["dp"]) == (0, 1, 0, 0, 0, 1)
    assert ctx["backend"] == "gloo" and ctx["cpu_compat"] is True
    assert ctx["first"] and ctx["last"] and ctx["main"]
    # The world of one rendezvous without writing RANK etc. to os.environ (children must not inherit them).
    assert result["rank_in_env"] is False

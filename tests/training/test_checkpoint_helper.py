"""Megatron-Core's checkpoint write helper (a spawned multiprocessing Manager that lives as long as the rank) must
survive the signals Slurm sends to every process of a job step: SIGUSR1 before the time limit and SIGTERM. Without
start_write_helper a single SIGUSR1 killed it, and the pre-emption save failed with EOFError (seen under a real
Slurm, tests/launch/slurm)."""

import subprocess
import sys
import textwrap

import pytest

from tests.launch.helpers import ROOT

PROGRAM = textwrap.dedent("""
    import os, signal, sys, time

    if __name__ == "__main__":  # the spawned helper imports this file again: keep Megatron out of its way
        from megatron_octo.training.checkpoint import start_write_helper  # first: the cheaper Megatron-Core import
        from megatron.core.dist_checkpointing.strategies import filesystem_async

        signal.signal(signal.SIGUSR1, lambda *_: None)  # as training's StopRequest does
        signal.signal(signal.SIGTERM, lambda *_: None)
        if sys.argv[1] in ("spawn", "fork"):
            start_write_helper(sys.argv[1])
        else:
            filesystem_async._get_write_results_queue()  # what the first save does by itself
        queue = filesystem_async._results_queue
        helper = queue._manager._process.pid if getattr(queue, "_manager", None) else None
        if helper is None:  # the proxy does not expose its manager: find the child process
            helper = int(os.popen(f"pgrep -P {os.getpid()} -n").read())
        os.kill(helper, signal.SIGUSR1)
        os.kill(helper, signal.SIGTERM)
        time.sleep(1)
        try:
            queue.put("written")
            print("alive" if queue.get(timeout=10) == "written" else "wrong")
        except (EOFError, BrokenPipeError, ConnectionError) as exc:
            print("dead", type(exc).__name__)
        print("handlers", signal.getsignal(signal.SIGUSR1) is not signal.SIG_IGN,
              signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN)
""")


def run(mode, tmp_path):
    path = tmp_path / "helper.py"
    path.write_text(PROGRAM)
    proc = subprocess.run([sys.executable, str(path), mode], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin",
                                         "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split("\n")


@pytest.mark.parametrize("context", ["spawn", "fork"])  # GPU machines spawn it, CPU ones fork it
def test_write_helper_started_early_survives_slurm_signals_and_handlers_are_restored(context, tmp_path):
    lines = run(context, tmp_path)
    assert lines[0] == "alive" and lines[1] == "handlers True True"


def test_without_it_one_sigusr1_kills_the_helper(tmp_path):
    """The control: the failure start_write_helper exists for."""
    assert run("plain", tmp_path)[0].startswith("dead")

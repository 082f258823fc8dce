"""`octo launch local`: the command line for one and several processes, the layout check, and the signal
contract (SIGTERM/SIGUSR1 to the launcher reach the ranks as SIGUSR1; a stopped stage exits REQUEUE_EXIT_CODE)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_octo.launch import JobSpec, LaunchError, LocalConfig, launch_local, local_command
from megatron_octo.training.signals import INTERRUPTED_EXIT_CODE, REQUEUE_EXIT_CODE
from tests.launch.helpers import ROOT

FAKE_RANK = """#!{python}
# Stands in for the interpreter the launcher starts: waits for SIGUSR1 (ignored on entry, as torchrun's workers
# inherit it), then exits with FAKE_RC, as torchrun does (1) when a worker exits non-zero.
import os, pathlib, signal, sys, time
out = pathlib.Path(os.environ["FAKE_OUT"])
def stop(signum, frame):
    out.write_text(signal.Signals(signum).name + " " + " ".join(sys.argv[1:]))
    if os.environ.get("FAKE_STAY"):  # a rank still finishing its step when the second Ctrl-C comes
        return
    sys.exit(int(os.environ["FAKE_RC"]))
signal.signal(signal.SIGUSR1, stop)
out.with_suffix(".ready").write_text("ready")
time.sleep(60)
sys.exit(3)
"""


def test_one_process_runs_the_command_itself_and_several_run_torchrun(tmp_path):
    job = JobSpec(recipe="tiny-cpu", run_dir=tmp_path / "run", overrides=["train.iters=5"], python="py")
    assert local_command(job, LocalConfig(nproc=1)) == [
        "py", "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(tmp_path / "run"),
        "train.iters=5"]
    assert local_command(job, LocalConfig(nproc=4))[:5] == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]


def test_dry_run_prints_the_command_and_checks_the_layout(tmp_path, capsys):
    job = JobSpec(recipe="tiny-cpu", run_dir=tmp_path / "run", python="py")
    assert launch_local(job, LocalConfig(nproc=2), dry_run=True) == 0
    assert capsys.readouterr().out.startswith("py -m torch.distributed.run --standalone --nproc-per-node=2 -m ")
    with pytest.raises(LaunchError, match=r"micro_batch x DP = 2 x 3 = 6"):  # tiny-cpu: global batch 8, micro 2
        launch_local(job, LocalConfig(nproc=3), dry_run=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("nproc, rank_rc, sent", [(2, 1, signal.SIGTERM), (1, REQUEUE_EXIT_CODE, signal.SIGUSR1),
                                                  (2, 1, signal.SIGINT)])
def test_a_signal_to_the_launcher_reaches_the_ranks_and_exits_with_the_requeue_code(tmp_path, nproc, rank_rc, sent):
    fake = tmp_path / "python"
    fake.write_text(FAKE_RANK.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "rank.out"
    code = ("import sys; from pathlib import Path; from megatron_octo.launch import JobSpec, LocalConfig; "
            "from megatron_octo.launch.local import run_local; "
            f"sys.exit(run_local(JobSpec(recipe='tiny-cpu', run_dir=Path({str(tmp_path / 'run')!r}), "
            f"python={str(fake)!r}), LocalConfig(nproc={nproc})))")
    env = dict(os.environ, FAKE_OUT=str(out), FAKE_RC=str(rank_rc),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launcher = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 120
    while not out.with_suffix(".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.send_signal(sent)
    assert launcher.wait(timeout=60) == REQUEUE_EXIT_CODE
    assert out.read_text().startswith("SIGUSR1 -m ")  # SIGTERM arrives as SIGUSR1: torchrun would SIGKILL at 30 s
    assert Path(tmp_path / "run").is_dir()


def test_a_second_ctrl_c_to_the_launcher_stops_the_ranks_at_once(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_RANK.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "rank.out"
    code = ("import sys; from pathlib import Path; from megatron_octo.launch import JobSpec, LocalConfig; "
            "from megatron_octo.launch.local import run_local; "
            f"sys.exit(run_local(JobSpec(recipe='tiny-cpu', run_dir=Path({str(tmp_path / 'run')!r}), "
            f"python={str(fake)!r}), LocalConfig(nproc=1)))")
    env = dict(os.environ, FAKE_OUT=str(out), FAKE_RC="0", FAKE_STAY="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launcher = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.with_suffix(".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.send_signal(signal.SIGINT)
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.read_text().startswith("SIGUSR1")  # the first Ctrl-C asks the rank to save
    started = time.monotonic()
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == INTERRUPTED_EXIT_CODE and time.monotonic() - started < 30  # not the rank's 60 s
    assert err.strip().splitlines() == [err.strip()] and err.startswith("octo: interrupted again")

"""Pre-emption end to end on CPU: the rendered job script runs under stand-ins for srun, scancel and scontrol;
Slurm's B:USR1 reaches the batch shell, the shell forwards SIGUSR1 to the rank, training saves a complete
checkpoint and exits with REQUEUE_EXIT_CODE, the script requeues its job, and the requeued attempt resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from megatron_octo.training.checkpoint import complete_checkpoints, read_meta
from megatron_octo.training.signals import REQUEUE_EXIT_CODE
from tests.launch.helpers import ROOT, rendered

ITERS = 40
OVERRIDES = [f"train.iters={ITERS}", "logging.tensorboard=false", "precision.dtype=fp32"]

FAKE_SRUN = """#!/bin/bash
# srun stand-in: run the step's program once, here, as task 0 of 1; record its pid and exit status.
while [[ $# -gt 0 && "$1" == --* ]]; do shift; done
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=1 SLURM_NTASKS_PER_NODE=1 SLURM_NODEID=0
"$@" &
echo $! > "$FAKE_SLURM/task.pid"
wait $!
rc=$?
echo $rc > "$FAKE_SLURM/task.rc"
exit $rc
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/scancel.log"
kill -USR1 "$(cat "$FAKE_SLURM/task.pid")"
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1" in
    show) echo localhost ;;
    requeue) echo "$2" >> "$FAKE_SLURM/requeued" ;;
esac
"""


def _fake_slurm(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _job_env(fake: Path, bin_dir: Path, attempt: int) -> dict:
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM=str(fake),
                SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", SLURM_JOB_NUM_NODES="1", SLURM_NNODES="1",
                SLURM_SUBMIT_DIR=str(ROOT), SLURM_RESTART_COUNT=str(attempt), OMP_NUM_THREADS="1",
                PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wait_for_first_step(proc, metrics: Path) -> None:
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            return
        time.sleep(0.01)
    raise AssertionError("training did not start a step")


def test_signal_saves_exits_with_requeue_code_requeues_and_the_next_attempt_resumes(tmp_path):
    run, fake = tmp_path / "run", tmp_path / "fake"
    bin_dir = _fake_slurm(fake)
    script, _ = rendered("tiny-cpu", 1, 1, run, OVERRIDES, python=sys.executable, time="00:30:00",
                         signal_lead_s=60)
    path = tmp_path / "job.sbatch"
    path.write_text(script)

    first = subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_job_env(fake, bin_dir, 0))
    _wait_for_first_step(first, run / "metrics.jsonl")
    first.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@60 does before the time limit
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert int((fake / "task.rc").read_text()) == REQUEUE_EXIT_CODE, out[-3000:]
    assert (fake / "requeued").read_text().split() == ["4242"]
    forwards = (fake / "scancel.log").read_text().splitlines()  # repeated every 10 s while the step runs
    assert forwards and set(forwards) == {"--signal=USR1 4242"}
    saved = read_meta(complete_checkpoints(run / "checkpoints")[-1]).step
    assert 1 <= saved < ITERS and "SIGUSR1 received: saved step" in out
    assert f"step exited with status {REQUEUE_EXIT_CODE}" in (run / "slurm" / "4242.0" / "status.txt").read_text()

    second = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=_job_env(fake, bin_dir, 1),
                            timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert int((fake / "task.rc").read_text()) == 0
    assert "resumed from" in second.stdout and f"iter_{saved:07d}" in second.stdout
    assert f"trained steps {saved + 1}-{ITERS} of {ITERS}" in second.stdout
    assert (fake / "requeued").read_text().split() == ["4242"]  # no second requeue
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ITERS + 1))
    assert read_meta(complete_checkpoints(run / "checkpoints")[-1]).step == ITERS


FAKE_RANK = """#!{python}
# A rank that starts slowly: SIGUSR1 stays ignored (as the job script leaves it) for 3 s, then its handler exits 75.
import signal, sys, time
time.sleep(3)
signal.signal(signal.SIGUSR1, lambda *_: (print("rank: USR1 handled", flush=True), sys.exit(75)))
time.sleep(60)
"""


def test_usr1_before_the_ranks_listen_is_forwarded_again_until_they_stop(tmp_path):
    """Slurm may signal while ranks still import or load a checkpoint (its limit check runs every 30 s): the job
    script repeats the forward until the step ends, so the stop is not lost."""
    fake = tmp_path / "fake"
    bin_dir = _fake_slurm(fake)
    rank = bin_dir / "fake-python"
    rank.write_text(FAKE_RANK.format(python=sys.executable))
    rank.chmod(0o755)
    script, _ = rendered("tiny-cpu", 1, 1, tmp_path / "run", python=str(rank), time="00:30:00", signal_lead_s=60)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    job = subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=_job_env(fake, bin_dir, 0))
    deadline = time.monotonic() + 30
    while not (fake / "task.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGUSR1)  # at once: the rank ignores it for 3 s
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 0, out
    assert int((fake / "task.rc").read_text()) == REQUEUE_EXIT_CODE and "rank: USR1 handled" in out
    assert len((fake / "scancel.log").read_text().splitlines()) >= 2  # forwarded again after the first was ignored
    assert (fake / "requeued").read_text().split() == ["4242"]

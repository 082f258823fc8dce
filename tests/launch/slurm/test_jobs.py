"""`octo launch slurm` against a real Slurm (22.05 from Debian in CI): CPU jobs of two ranks over gloo, Slurm's own
pre-emption signal and requeue, scancel, and a decay branch held by --dependency=afterok on its stable job.

Run by `make test-slurm` (tests/launch/slurm/run.sh starts the cluster); elsewhere these tests skip. Every figure
compared comes from another run of the same recipe (torchrun on this machine), never from the code under test.
"""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import List

import pytest

from megatron_octo.training.checkpoint import complete_checkpoints, read_meta
from megatron_octo.training.signals import REQUEUE_EXIT_CODE

QUIET = ["logging.tensorboard=false"]

# A 2-rank job that finishes within seconds of starting: TP=2, the shipped tiny-cpu recipe.
SHORT = ["parallel.tp=2", "train.iters=10", *QUIET]

# The stable stage at toy scale: constant LR, long enough (tens of seconds of steps on 2 cores) that Slurm's
# signal arrives while it trains. DP=2.
LONG_ITERS = 600
LONG = [f"train.iters={LONG_ITERS}", "schedule.style=constant", "schedule.warmup_iters=0", "schedule.min_lr=3.0e-3",
        "logging.log_interval=100", *QUIET]

# The cancelled run: long enough to be cancelled after its first periodic save (every 5 steps).
CANCEL_ITERS = 200

# Time limit and signal lead of the pre-empted job: Slurm checks limits every 30 s and signals once
# now >= end - lead - 30, so with 3 minutes and a lead of 140 s the USR1 comes 10-40 s after the start (measured on
# 22.05: a lead of 60 s under a 2-minute limit signalled 38 s in). The job script repeats the forwarded signal every
# 10 s, so ranks still importing when it arrives get it once training has installed its handler.
PREEMPT_TIME, PREEMPT_LEAD = "3", "140"

# The decay branch: cosine from the stable LR to a tenth, no warm-up, from the stable run's newest checkpoint.
DECAY_ITERS = 10


def metrics(run_dir: Path) -> List[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def numbers(run_dir: Path) -> List[tuple]:
    """What must agree between two runs of one recipe: step, loss, LR and grad norm of every step."""
    return [(m["step"], m["loss"], m["lr"], m["grad_norm"]) for m in metrics(run_dir)]


def torchrun(cluster, run_dir: Path, overrides: List[str]) -> None:
    """The same stage without Slurm: `octo launch local --nproc 2` (torchrun --standalone)."""
    proc = cluster.octo("launch", "local", "--recipe", "tiny-cpu", "--nproc", "2", "--run-dir", str(run_dir),
                        *overrides, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def job_output(run_dir: Path, job_id: str) -> str:
    return next((run_dir / "slurm").glob(f"*-{job_id}.out")).read_text()


def slurm_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")


@pytest.fixture(scope="module")
def long_reference(slurm_conf, tmp_path_factory):
    """LONG run once, uninterrupted, under torchrun: the figures a pre-empted or cancelled run must end with."""
    from tests.launch.slurm.conftest import Cluster

    run = tmp_path_factory.mktemp("reference") / "run"
    torchrun(Cluster(slurm_conf), run, LONG)
    steps = numbers(run)
    assert [s[0] for s in steps] == list(range(1, LONG_ITERS + 1))
    return steps


def test_cpu_job_of_two_ranks_completes_with_the_metrics_of_torchrun(cluster, tmp_path):
    job = cluster.launch(tmp_path / "slurm", SHORT, "--time", "10")
    torchrun(cluster, tmp_path / "torchrun", SHORT)  # meanwhile, on the same cores
    info = cluster.finished(job)
    out = job_output(tmp_path / "slurm", job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out[-3000:]
    assert info["NumTasks"] == "2" and info["Restarts"] == "0"
    assert numbers(tmp_path / "slurm") == numbers(tmp_path / "torchrun")
    assert [s[0] for s in numbers(tmp_path / "slurm")] == list(range(1, 11))
    summary = json.loads((tmp_path / "slurm" / "train_summary.json").read_text())
    assert (summary["world_size"], summary["tp"], summary["dp"]) == (2, 2, 1)
    attempt = tmp_path / "slurm" / "slurm" / f"{job}.0"
    assert "step exited with status 0" in (attempt / "status.txt").read_text()
    assert (attempt / "nodes.txt").read_text().split() == [socket.gethostname().split(".")[0]]
    env = dict(line.split("=", 1) for line in (attempt / "env.txt").read_text().splitlines())
    assert env["SLURM_NTASKS"] == "2" and env["SLURM_JOB_ID"] == job and env["MASTER_PORT"] == str(20000 + int(job))


def test_preempted_stable_job_requeues_resumes_and_its_decay_branch_waits_for_it(cluster, tmp_path, request):
    stable, decay = tmp_path / "stable", tmp_path / "decay-long"
    job = cluster.launch(stable, LONG, "--time", PREEMPT_TIME, "--signal-lead", PREEMPT_LEAD)
    branch = cluster.launch(decay, [f"train.iters={DECAY_ITERS}", "schedule.warmup_iters=0", *QUIET,
                                    f"checkpoint.branch_from={stable}"],
                            "--time", "10", "--dependency", f"afterok:{job}", "--job-name", "octo-decay-long")
    assert cluster.job(branch)["Reason"] == "Dependency"

    # Attempt 0: Slurm's USR1, the ranks save and exit 75, the script requeues the job (Slurm holds a requeued job
    # for about two minutes: Reason=BeginTime).
    first = cluster.wait(job, lambda j: j["Restarts"] == "1", "the requeue")
    out = job_output(stable, job)
    assert first["JobState"] == "PENDING", out[-3000:]
    assert "SIGUSR1 received" in out
    # Every rank exits 75 after the save; srun's --kill-on-bad-exit may end the last ones, already leaving, with
    # SIGTERM, so the step's status is 75 or 143: the script requeues on either once it got the signal.
    assert f"Exited with exit code {REQUEUE_EXIT_CODE}" in out, out[-3000:]
    status = (stable / "slurm" / f"{job}.0" / "status.txt").read_text()
    assert status.split()[-1] in (str(REQUEUE_EXIT_CODE), "143") and "requeueing job" in out, out[-3000:]
    saved = read_meta(complete_checkpoints(stable / "checkpoints")[-1]).step
    assert 1 <= saved < LONG_ITERS, f"saved step {saved}: the job ended before Slurm's signal; raise LONG_ITERS"
    assert f"saved step {saved}, exiting" in out
    assert cluster.job(branch)["JobState"] == "PENDING"  # a requeued job has not completed: afterok still holds
    # Every attempt gets the same 3-minute limit, so a second one would be signalled as well; a longer limit lets
    # it finish (on a cluster a stage spans as many attempts as it needs).
    cluster.scontrol("update", f"JobId={job}", "TimeLimit=20")

    reference = request.getfixturevalue("long_reference")  # torchrun while Slurm holds the requeued job

    done = cluster.finished(job)
    out = job_output(stable, job)
    assert done["JobState"] == "COMPLETED" and done["Restarts"] == "1", out[-3000:]
    assert f"iter_{saved:07d}" in out and f"trained steps {saved + 1}-{LONG_ITERS} of {LONG_ITERS}" in out
    assert numbers(stable) == reference  # every step once, the same figures as the uninterrupted run
    assert "step exited with status 0" in (stable / "slurm" / f"{job}.1" / "status.txt").read_text()
    for attempt in (0, 1):
        assert (stable / "slurm" / f"{job}.{attempt}" / "env.txt").is_file()
    assert "SLURM_RESTART_COUNT=1" in (stable / "slurm" / f"{job}.1" / "env.txt").read_text()

    # The decay branch starts only once the stable job has completed, from its last checkpoint.
    ended = cluster.finished(branch)
    branch_out = job_output(decay, branch)
    assert ended["JobState"] == "COMPLETED", branch_out[-3000:]
    assert slurm_time(ended["StartTime"]) >= slurm_time(done["EndTime"])
    last = stable / "checkpoints" / f"iter_{LONG_ITERS:07d}"
    assert f"branched from {last}" in branch_out
    summary = json.loads((decay / "train_summary.json").read_text())
    assert summary["lineage"][-1]["step"] == LONG_ITERS and Path(summary["lineage"][-1]["path"]) == last.resolve()
    assert [m["step"] for m in metrics(decay)] == list(range(1, DECAY_ITERS + 1))
    lrs = [m["lr"] for m in metrics(decay)]
    assert lrs[0] == pytest.approx(3.0e-3) and lrs == sorted(lrs, reverse=True) and lrs[-1] > 3.0e-4


def test_scancel_leaves_a_complete_checkpoint_and_a_resumable_run(cluster, tmp_path, long_reference):
    """A shorter run of the LONG recipe: with a constant LR its steps are the first CANCEL_ITERS of the reference."""
    run = tmp_path / "run"
    overrides = [*LONG, f"train.iters={CANCEL_ITERS}", "checkpoint.save_interval=5"]
    job = cluster.launch(run, overrides, "--time", "20")
    running = cluster.wait(job, lambda j: j["JobState"] != "PENDING" and (
        j["JobState"] != "RUNNING" or bool(complete_checkpoints(run / "checkpoints"))), "a first checkpoint")
    assert running["JobState"] == "RUNNING", job_output(run, job)[-3000:]
    subprocess.run(["scancel", job], check=True, env=cluster.env, timeout=60)
    ended = cluster.finished(job)
    out = job_output(run, job)
    assert ended["JobState"] == "CANCELLED" and ended["Restarts"] == "0", out[-3000:]
    assert "SIGTERM received" in out and "not requeueing" in out and "requeueing job" not in out, out[-3000:]
    newest = complete_checkpoints(run / "checkpoints")[-1]
    saved = read_meta(newest).step
    assert 5 <= saved < CANCEL_ITERS, f"saved step {saved}: the job ended before scancel; raise CANCEL_ITERS"
    assert cluster.job(job)["JobState"] == "CANCELLED"  # still: not requeued behind the test's back

    # Submitted again, the same job resumes from that checkpoint and ends as the uninterrupted run does.
    again = cluster.launch(run, overrides, "--time", "20", "--overwrite")
    done = cluster.finished(again)
    out = job_output(run, again)
    assert done["JobState"] == "COMPLETED", out[-3000:]
    assert f"resumed from {newest}" in out
    assert numbers(run) == long_reference[:CANCEL_ITERS]


def test_branch_of_a_failed_stable_job_is_cancelled_not_left_pending(cluster, tmp_path):
    """examples/chain.sh adds --kill-on-invalid-dep=yes: a stable job that fails cancels its decay branches."""
    failed = subprocess.run(["sbatch", "--parsable", "--hold", "--output", str(tmp_path / "failed.out"),
                             "--wrap", "exit 3"], capture_output=True, text=True, env=cluster.env, timeout=60)
    assert failed.returncode == 0, failed.stderr
    stable = failed.stdout.strip().split(";")[0]
    cluster.jobs.append(stable)
    branch = cluster.launch(tmp_path / "decay", [f"train.iters={DECAY_ITERS}", *QUIET,
                                                 f"checkpoint.branch_from={tmp_path / 'stable'}"],
                            "--dependency", f"afterok:{stable}", "--sbatch-arg=--kill-on-invalid-dep=yes")
    assert cluster.job(branch)["Reason"] == "Dependency"
    cluster.scontrol("release", stable)  # held until the branch was queued behind it
    ended = cluster.finished(branch, timeout=300)
    assert ended["JobState"] == "CANCELLED" and ended["Reason"] == "DependencyNeverSatisfied"
    assert cluster.job(stable)["ExitCode"] == "3:0" and not (tmp_path / "decay" / "metrics.jsonl").exists()

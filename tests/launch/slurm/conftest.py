"""A real one-node Slurm cluster for the launch tests: the one `make test-slurm` started (tests/launch/slurm/run.sh,
which exports OCTO_SLURM_CONF), or a skip that says why there is none.

``Cluster`` submits jobs with `octo launch slurm` (the real sbatch, srun, scontrol and scancel), reads their state
from ``scontrol show job``, and cancels at teardown whatever a test left queued or running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.launch.helpers import ROOT

TIMEOUT_S = 900
"""Longest wait for one job event: generous, the machine may be shared; a test fails with the job's state then."""


@dataclass
class Cluster:
    conf: str
    jobs: List[str] = field(default_factory=list)

    @property
    def env(self) -> Dict[str, str]:
        """The environment of submissions and reference runs (sbatch exports it to the job)."""
        return dict(os.environ, SLURM_CONF=self.conf, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                    PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def octo(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "megatron_octo", *args], capture_output=True, text=True,
                              cwd=ROOT, env=self.env, timeout=timeout)

    def launch(self, run_dir: Path, overrides: List[str], *flags: str, recipe: str = "tiny-cpu") -> str:
        """`octo launch slurm` of a 2-rank CPU job on this node; the job id."""
        proc = self.octo("launch", "slurm", "--recipe", recipe, "--nodes", "1", "--gpus-per-node", "0",
                         "--ranks-per-node", "2", "--cpus-per-node", "2", "--run-dir", str(run_dir), "--parsable",
                         *flags, *overrides)
        assert proc.returncode == 0, proc.stderr[-3000:]
        job_id = proc.stdout.strip()
        assert job_id.isdigit(), proc.stdout
        self.jobs.append(job_id)
        return job_id

    def scontrol(self, *args: str) -> str:
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, env=self.env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job``'s fields (JobState, Reason, Restarts, StartTime, EndTime, ExitCode, ...)."""
        text = self.scontrol("show", "job", "--oneliner", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait(self, job_id: str, done: Callable[[Dict[str, str]], bool], what: str,
             timeout: float = TIMEOUT_S) -> Dict[str, str]:
        """Poll the job until ``done(fields)``; fail naming ``what`` and the job's state after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if done(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: {what} not reached in {timeout:.0f} s: "
                                     f"{info.get('JobState')} ({info.get('Reason')})")
            time.sleep(1)

    def finished(self, job_id: str, timeout: float = TIMEOUT_S) -> Dict[str, str]:
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")
        return self.wait(job_id, lambda j: j["JobState"] in ended, "the end", timeout)

    def cancel_all(self) -> None:
        """scancel what this test submitted and wait until no step of it runs (the next test gets the CPUs)."""
        if not self.jobs:
            return
        subprocess.run(["scancel", *self.jobs], capture_output=True, env=self.env, timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            proc = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(self.jobs)], capture_output=True,
                                  text=True, env=self.env, timeout=60)
            if not any(state in ("RUNNING", "COMPLETING") for state in proc.stdout.split()[1::2]):
                break
            time.sleep(1)
        self.jobs.clear()


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    conf = os.environ.get("OCTO_SLURM_CONF")
    if not conf:
        pytest.skip(os.environ.get("OCTO_SLURM_SKIP") or
                    "no test Slurm cluster: `make test-slurm` starts one (as root; it installs Slurm when missing)")
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                          env=dict(os.environ, SLURM_CONF=conf), timeout=60)
    if proc.returncode != 0 or proc.stdout.split()[:1] not in (["idle"], ["alloc"], ["mix"]):
        pytest.fail(f"the test cluster of {conf} does not answer or has no usable node: {proc.stdout}{proc.stderr}")
    return conf


@pytest.fixture
def cluster(slurm_conf):
    c = Cluster(slurm_conf)
    yield c
    c.cancel_all()

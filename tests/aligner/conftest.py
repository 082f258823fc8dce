"""Fixtures for the aligner-venv tests: the exports are made by the main venv (see make_fixture.py), once per session.

The main venv's python is ``$OCTO_MAIN_PYTHON``, else ``.venv/bin/python`` of this checkout (``make test-aligner``
passes it). Nothing here imports NeMo: the test modules skip themselves where it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "aligner: needs the NeMo-Aligner venv (make test-aligner)")


def main_python() -> Path:
    return Path(os.environ.get("OCTO_MAIN_PYTHON") or REPO / ".venv" / "bin" / "python")


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict:
    """name -> {"dir": Path, "tp", "pp", "vocab_size"} of each model make_fixture.py wrote."""
    python = main_python()
    if not python.is_file():
        pytest.fail(f"the main venv's python {python} is missing: run `make venv` or set OCTO_MAIN_PYTHON")
    out = tmp_path_factory.mktemp("exports")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(python), "-m", "tests.aligner.make_fixture", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((out / "index.json").read_text())
    return {name: {**info, "dir": out / name} for name, info in index.items()}

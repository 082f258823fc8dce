"""Fixtures for the evaluation tests: real data, one verification pool per session, a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.eval.helpers import build_tiny_model, shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def pool():
    """One two-worker verification pool for the session (the machine has two cores). A 5 s deadline: a worker's
    first parse builds math-verify's LaTeX grammar, which took over 2 s when the suite's other processes (xdist's
    second worker, torchrun ranks) held both cores."""
    from megatron_octo.eval.pool import DeadlinePool

    with DeadlinePool(workers=2, timeout=5.0) as p:
        yield p


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))

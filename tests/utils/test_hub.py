"""Models and tokenizers by Hub ID, offline, against a pre-populated Hugging Face cache (the layout
huggingface_hub writes: models--ORG--NAME/refs/main -> snapshots/COMMIT/files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_octo.utils.hub import HubError, is_hub_id, resolve_model_path
from tests.eval.helpers import build_tiny_model

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A cache holding octo-test/tiny-llama at COMMIT (a tiny random Llama with its tokenizer)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / "models--octo-test--tiny-llama"
    build_tiny_model(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def _offline(monkeypatch, cache):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def test_hub_ids_are_told_from_paths():
    assert is_hub_id("OctoThinker/OctoThinker-3B-Hybrid-Base") and is_hub_id("org/name@v1.0")
    assert not is_hub_id("./org/name") and not is_hub_id("/abs/path") and not is_hub_id("a/b/c")
    assert not is_hub_id("runs") and not is_hub_id("~/x/y")


def test_a_cached_model_resolves_offline(hub_cache, monkeypatch):
    _offline(monkeypatch, hub_cache)
    path = resolve_model_path("octo-test/tiny-llama")
    assert path == hub_cache / "models--octo-test--tiny-llama" / "snapshots" / COMMIT
    assert (path / "config.json").is_file()


def test_a_local_directory_wins_and_a_missing_id_is_one_line(hub_cache, monkeypatch, tmp_path):
    _offline(monkeypatch, hub_cache)
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("org/name") == Path("org/name") and not is_hub_id("org/name")
    with pytest.raises(HubError, match="not in the Hugging Face cache"):
        resolve_model_path("octo-test/absent-model")


def test_tokenizer_by_hub_id(hub_cache, monkeypatch):
    _offline(monkeypatch, hub_cache)
    from megatron_octo.data.tokenizer import load_tokenizer

    tok = load_tokenizer("octo-test/tiny-llama")
    assert tok("1 + 1")["input_ids"]


def test_octo_eval_with_a_hub_id_offline(hub_cache, tmp_path):
    data = Path(os.environ.get("OCTO_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not (data / "eval").is_dir():
        pytest.skip(f"benchmark data not found at {data}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "eval", "--model", "octo-test/tiny-llama",
                           "--benchmarks", "amc23", "--data-dir", str(data / "eval"), "--limit", "1",
                           "--max-new-tokens", "2", "--output", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["model"] == "octo-test/tiny-llama"

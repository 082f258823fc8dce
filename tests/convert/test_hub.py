"""Hugging Face Hub model IDs wherever an HF directory is accepted, through huggingface_hub's own cache lookup.

The cache is laid out by hand the way huggingface_hub stores a download (models--OWNER--NAME/refs/main and
snapshots/REVISION/); with HF_HUB_OFFLINE=1 only the cache is consulted, so no network is involved.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from megatron_octo.cli import main
from megatron_octo.convert import hf_to_mcore, mcore_to_hf

from .conftest import load_safetensors_dir
from .test_convert import assert_one_line_error

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(hf_models, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--octo-test--tiny-llama"
    shutil.copytree(hf_models["llama-untied"], repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_cached_hub_id_converts_like_its_directory(hub_cache, hf_models, tmp_path):
    out = hf_to_mcore("octo-test/tiny-llama", tmp_path / "mcore", quiet=True).output
    back = mcore_to_hf(out, tmp_path / "hf", quiet=True).output
    original, again = load_safetensors_dir(hf_models["llama-untied"]), load_safetensors_dir(back)
    assert set(again) == set(original) and all(torch.equal(again[k], original[k]) for k in original)


def test_model_from_hf_takes_a_hub_id(hub_cache):
    from megatron_octo.config.loader import load_recipe

    assert load_recipe("tiny-cpu", ["model.from_hf=octo-test/tiny-llama"]).model.tie_word_embeddings is False


def test_offline_and_not_cached_is_one_line(hub_cache, tmp_path, capsys):
    argv = ["convert", "--from", "hf", "--to", "mcore", "--input", "octo-test/not-there", "--output",
            str(tmp_path / "out")]
    assert main(argv) == 2
    assert_one_line_error(capsys, "model octo-test/not-there is not a local directory and not in the Hugging Face "
                                  "cache (offline: HF_HUB_OFFLINE is set")

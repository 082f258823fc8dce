"""Mixture audit: realized token shares of the first 10,000 training samples are within 1 percentage point of the
RECIPE.md targets for the stable and the three decay mixtures (small generated sources)."""

from __future__ import annotations

import pytest

from megatron_octo.cli import main
from megatron_octo.config import load_recipe
from megatron_octo.data.audit import audit, format_table
from megatron_octo.data.errors import DataError
from megatron_octo.data.mixtures import load_mixture, mixture_names
from tests.data.conftest import write_source
from tests.data.test_mixtures import RECIPE


@pytest.fixture(scope="module")
def octo_data(tmp_path_factory):
    """Every source path of every shipped mixture, as a small indexed dataset under a fresh OCTO_DATA."""
    root = tmp_path_factory.mktemp("octo_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OCTO_DATA", str(root))
        paths = {s.path for name in mixture_names() for s in load_mixture(name).sources}
    for k, path in enumerate(sorted(paths)):
        write_source(root / path[len(str(root)) + 1:], k % 60, docs=20, seed=k)
    return root


@pytest.mark.parametrize("mixture", list(RECIPE))
def test_realized_shares_within_one_point_of_the_recipe(octo_data, monkeypatch, tmp_path, mixture):
    monkeypatch.setenv("OCTO_DATA", str(octo_data))
    recipe = load_recipe("tiny-cpu", ["data.kind=blend", f"data.mixture={mixture}", "model.vocab_size=60000",
                                      f"data.cache_dir={tmp_path}"])
    result = audit(recipe, samples=10_000)
    realized = {r.name: r.realized for r in result.rows}
    assert set(realized) == set(RECIPE[mixture])
    for name, target in RECIPE[mixture].items():
        assert abs(realized[name] - target) <= 0.01, (name, realized[name], target)
    assert sum(r.tokens for r in result.rows) == 10_000 * 65  # seq_len 64 + 1 tokens a sample
    assert result.ok()
    table = format_table(result)
    assert all(name in table for name in RECIPE[mixture]) and table.splitlines()[-2].endswith(": ok")


def test_audit_needs_a_blend():
    with pytest.raises(DataError, match="data.kind=blend"):
        audit(load_recipe("tiny-cpu"), samples=10)


def test_cli_prints_the_table_and_writes_the_chart(octo_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OCTO_DATA", str(octo_data))
    plot = tmp_path / "audit.png"
    args = ["data", "audit", "--recipe", "tiny-cpu", "--samples", "2000", "--plot", str(plot), "data.kind=blend",
            "data.mixture=decay-hybrid", "model.vocab_size=60000", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "openr1-math-220k" in out and "10.00%" in out and "bar chart:" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args) == 2  # the chart exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0

"""A blend whose sources are missing names every missing source in one line (it named only the first)."""

from __future__ import annotations

from megatron_octo.cli import main
from tests.data.conftest import write_source


def test_audit_names_every_missing_source(tmp_path, capsys):
    present = write_source(tmp_path / "web", 0)
    spec = ", ".join(f"{{name: {n}, weight: 0.25, path: '{p}'}}" for n, p in
                     [("web", present), ("qa", tmp_path / "qa"), ("chat", tmp_path / "chat"),
                      ("cot", tmp_path / "cot")])
    code = main(["data", "audit", "--recipe", "tiny-cpu", "--plot", str(tmp_path / "a.png"), "data.kind=blend",
                 f"data.sources=[{spec}]", "model.vocab_size=3000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "3 of 4 data sources" in err[0] and all(f"'{n}'" in err[0] for n in ("qa", "chat", "cot"))
    assert "'web'" not in err[0] and not (tmp_path / "a.png").exists()

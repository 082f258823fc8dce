"""``octo eval``: a run on the tiny model with real AMC23 items, its outputs, and one-line errors (exit status 2)."""

from __future__ import annotations

import json

import pytest

from megatron_octo.cli import main


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("octo: error: ") and "Traceback" not in err, err
    return lines[0]


def test_octo_eval_runs_and_writes_results(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "eval-out"
    argv = ["eval", "--model", str(tiny_model), "--benchmarks", "amc23", "--data-dir", str(data_dir / "eval"),
            "--limit", "2", "--max-new-tokens", "4", "--dtype", "float32", "--output", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "| AMC23 | 2 |" in captured.out and "| **average** |" in captured.out
    assert "amc23: 2/2 items" in captured.err and "items/s" in captured.err  # progress line
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["amc23"]["n"] == 2 and results["max_new_tokens"] == 4
    assert len((out / "predictions" / "amc23.jsonl").read_text().splitlines()) == 2
    assert main(argv) == 2  # the same output again without --overwrite
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--benchmarks", "gsm9k"], "unknown benchmark 'gsm9k'"),
        (["--benchmarks", "gsm8k", "--model", "/nonexistent/model"], "model directory /nonexistent/model"),
        (["--benchmarks", "gsm8k", "--zero-shot", "--template", "fancy"], "unknown template 'fancy'"),
        (["--benchmarks", "gsm8k", "--source", "hf", "--hf-dataset", "gsm8k"], "bad --hf-dataset"),
    ],
)
def test_user_errors_are_one_line(tiny_model, data_dir, tmp_path, capsys, extra, fragment):
    argv = ["eval", "--model", str(tiny_model), "--data-dir", str(data_dir / "eval"), "--output",
            str(tmp_path / "o")] + extra
    assert main(argv) == 2
    assert fragment in _one_error_line(capsys.readouterr().err)


def test_help_mentions_the_benchmarks(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--zero-shot" in out and "olympiadbench" in out and "--overwrite" in out

"""The ``octo`` command, called in-process: listing and showing recipes, help, and user errors as exit status 2."""

from __future__ import annotations

import pytest
import yaml

from megatron_octo.cli import main


def _single_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("octo: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_recipe_list_shows_names_and_descriptions(capsys):
    assert main(["recipe", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "tiny-cpu" in rows and "tiny-cpu-qwen2" in rows
    assert "Tiny Llama on synthetic tokens" in rows["tiny-cpu"]
    assert "Tiny Qwen2" in rows["tiny-cpu-qwen2"]


def test_recipe_show_applies_overrides(capsys):
    assert main(["recipe", "show", "tiny-cpu", "parallel.tp=2"]) == 0
    out = capsys.readouterr().out
    assert "tp: 2" in out
    shown = yaml.safe_load(out)
    assert shown["name"] == "tiny-cpu"
    assert shown["parallel"]["tp"] == 2
    assert shown["model"]["preset"] == "tiny-llama" and shown["model"]["num_layers"] == 4


def test_recipe_show_without_overrides(capsys):
    assert main(["recipe", "show", "tiny-cpu-qwen2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["family"] == "qwen2" and shown["model"]["add_qkv_bias"] is True
    assert shown["parallel"]["tp"] == 1


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["recipe", "show", "tiny-cpu", "train.iters"], "key=value"),
        (["recipe", "show", "tiny-cpu", "parallel.tpp=2"], "parallel.tpp"),
        (["recipe", "show", "tiny-cpu", "parallel.tp=3"], "parallel.tp=3"),
        (["recipe", "show", "tiny-cpuu"], "tiny-cpuu"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert fragment in _single_error_line(captured.err)


def test_train_help_mentions_the_outputs(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert "metrics.jsonl" in out
    assert "--overwrite" in out and "--run-dir" in out


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main([])
    assert excinfo.value.code == 2


def test_train_refuses_a_finished_run_without_checkpoints_before_any_process_group(tmp_path, capsys, monkeypatch):
    """A run that stopped before its first save restarts with the same command (tests/training/test_stage.py); one
    that finished without checkpoints (checkpoint.save=false) holds results, refused without --overwrite."""
    from megatron_octo import parallel

    def no_process_groups(*args, **kwargs):
        raise AssertionError("parallel.initialize was called before the run directory was checked")

    monkeypatch.setattr(parallel, "initialize", no_process_groups)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    (run_dir / "train_summary.json").write_text('{"steps": 1}\n')
    assert main(["train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir), "train.iters=2"]) == 2
    line = _single_error_line(capsys.readouterr().err)
    assert "--overwrite" in line
    assert "train_summary.json" in line
    # Nothing in the run directory was touched.
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl", "train_summary.json"]
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 5.0}\n'


def test_train_with_a_bad_override_fails_before_training(tmp_path, capsys, monkeypatch):
    from megatron_octo import parallel

    monkeypatch.setattr(parallel, "initialize", lambda *a, **k: pytest.fail("parallel.initialize was called"))
    assert main(["train", "--recipe", "tiny-cpu", "--run-dir", str(tmp_path / "r"), "train.iters=abc"]) == 2
    assert "train.iters" in _single_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_overwrite_with_a_bad_override_keeps_the_old_run(tmp_path, capsys, monkeypatch):
    from megatron_octo import parallel

    monkeypatch.setattr(parallel, "initialize", lambda *a, **k: pytest.fail("parallel.initialize was called"))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "iter_0000002").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    argv = ["train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir), "--overwrite", "train.iterz=2"]
    assert main(argv) == 2
    assert "train.iterz" in _single_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert (run_dir / "checkpoints" / "iter_0000002").is_dir()

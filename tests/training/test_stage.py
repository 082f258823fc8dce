"""The stage runner through `octo train`: the save and stop policy (signals on the exit_interval step, Ctrl-C), and
resume that is never blocked (corrupt newest checkpoint, torn metrics line, a run killed before its first save,
setup mistakes that must not poison the run directory, a no-op resume, another model or recipe). Real processes."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_octo.training.checkpoint import complete_checkpoints
from megatron_octo.training.metrics import MetricsFileError, read_metrics, truncate_metrics
from megatron_octo.training.resume import checkpoint_problem, usable_checkpoint
from megatron_octo.training.signals import INTERRUPTED_EXIT_CODE, REQUEUE_EXIT_CODE

HOOK = Path(__file__).with_name("step_hook.py")
BASE = ["logging.tensorboard=false", "precision.dtype=fp32"]
TRAIN_STEP = "megatron_octo.training.loop:train_step"


def octo(run_dir, *overrides, hook=None, recipe="tiny-cpu", iters=6, extra_args=()):
    """``octo train`` in a child process; ``hook``: (step, "SIGNAL[,SIGNAL]") sent after that 0-based step."""
    args = ["train", "--recipe", recipe, "--run-dir", str(run_dir), *extra_args, f"train.iters={iters}", *BASE,
            *overrides]
    cmd = [sys.executable, "-m", "megatron_octo", *args]
    if hook is not None:
        cmd = [sys.executable, str(HOOK), TRAIN_STEP, str(hook[0]), hook[1], "--", *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, start_new_session=True)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def one_line_error(proc, code=2):
    """The process failed with ``code`` and a single line on stderr, no traceback."""
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def steps(run_dir):
    return [r["step"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


def digest(root):
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """Six steps, a checkpoint after each of the last three (keep_last=3)."""
    run = tmp_path_factory.mktemp("saved") / "run"
    ok(octo(run, "checkpoint.save_interval=1", "checkpoint.keep_last=3"))
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == [f"iter_000000{i}" for i in (4, 5, 6)]
    return run


def copy_run(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    return run


# ------------------------------------------------------------------------------------- save and stop policy

def test_a_stop_signal_on_the_exit_interval_step_saves_and_exits_75(tmp_path):
    """exit_interval=2 stops after step 2 either way; the signal that arrives during that step must still make the
    job requeue (75), with the checkpoint of step 2."""
    run = tmp_path / "run"
    proc = octo(run, "train.exit_interval=2", hook=(1, "SIGUSR1"))
    assert proc.returncode == REQUEUE_EXIT_CODE, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "SIGUSR1 received: saved step 2, exiting" in proc.stdout
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["iter_0000002"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["preempted"] and summary["exit_code"] == REQUEUE_EXIT_CODE and summary["steps_run"] == 2
    # exit_interval alone is not a pre-emption
    proc = ok(octo(run, "train.exit_interval=2"))
    assert steps(run) == [1, 2, 3, 4]


def test_first_ctrl_c_saves_and_exits_75_second_stops_at_once(tmp_path):
    run = tmp_path / "run"
    proc = octo(run, hook=(2, "SIGINT"))
    assert proc.returncode == REQUEUE_EXIT_CODE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Ctrl-C again stops at once" in proc.stderr
    assert "SIGINT received: saved step 3, exiting" in proc.stdout
    assert complete_checkpoints(run / "checkpoints")[-1].name == "iter_0000003"

    before = digest(run / "checkpoints")
    proc = octo(run, hook=(4, "SIGINT,SIGINT"))  # resumes at step 4 (0-based 3); Ctrl-C twice during step 5
    assert proc.returncode == INTERRUPTED_EXIT_CODE
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and lines[-1].startswith("octo: interrupted again: stopped at once")
    assert digest(run / "checkpoints") == before  # nothing saved, nothing lost
    ok(octo(run))  # the same command resumes from step 3
    assert steps(run) == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_before_the_loop_is_one_line(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "import os, signal, sys; import megatron_octo.training.build as b; "
           "orig = b.build\n"
           "def build(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return orig(*a, **k)\n"
           "import megatron_octo.training.loop as loop; loop.build = build\n"
           "from megatron_octo.cli import main; sys.exit(main(sys.argv[1:]))",
           "train", "--recipe", "tiny-cpu", "--run-dir", str(run), *BASE]
    # As from a terminal: SIGINT at its default disposition, which Python turns into KeyboardInterrupt (pytest-xdist's
    # workers ignore SIGINT, and a child inherits an ignored signal).
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert one_line_error(proc, code=130) == "octo: interrupted (Ctrl-C)"
    assert not (run / "recipe.yaml").exists()


# ---------------------------------------------------------------------------------- resume is never blocked

@pytest.mark.parametrize("damage", ["truncated shard", "no .metadata", "garbage common.pt", "garbage meta"])
def test_checkpoint_problem_names_each_kind_of_damage(saved_run, tmp_path, damage):
    run = copy_run(saved_run, tmp_path)
    newest = run / "checkpoints" / "iter_0000006"
    assert checkpoint_problem(newest) is None
    if damage == "truncated shard":
        shard = sorted(newest.glob("*.distcp"))[0]
        shard.write_bytes(shard.read_bytes()[:1000])
        expected = f"shard file {shard.name} is truncated"
    elif damage == "no .metadata":
        (newest / ".metadata").unlink()
        expected = ".metadata is missing"
    elif damage == "garbage common.pt":
        (newest / "common.pt").write_bytes(b"\x00garbage")
        expected = "common.pt is unreadable"
    else:
        (newest / "octo_checkpoint.json").write_text("{not json")
        expected = "octo_checkpoint.json is unreadable"
    assert checkpoint_problem(newest).startswith(expected)
    messages = []
    found, skipped = usable_checkpoint(run / "checkpoints", messages.append)
    assert found.name == "iter_0000005" and [p.name for p, _ in skipped] == ["iter_0000006"]
    assert (run / "checkpoints" / "iter_0000006.corrupt").is_dir() and not newest.exists()
    assert len(messages) == 1 and "iter_0000006" in messages[0] and expected in messages[0]


def test_resume_falls_back_past_a_corrupt_newest_checkpoint_and_a_torn_metrics_line(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    shard = sorted((run / "checkpoints" / "iter_0000006").glob("*.distcp"))[-1]
    shard.write_bytes(shard.read_bytes()[:100])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 5.1')  # a kill during a write
    # saving off: what the fallback itself leaves behind is visible
    proc = ok(octo(run, "checkpoint.save=false"))
    out = proc.stdout
    assert "iter_0000006 is unusable (shard file" in out and "set aside as iter_0000006.corrupt" in out
    assert "resumed from" in out and "iter_0000005" in out
    assert losses(run) == losses(saved_run)  # step 6 again from step 5's checkpoint: the same numbers
    assert (run / "checkpoints" / "iter_0000006.corrupt").is_dir()
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["iter_0000004", "iter_0000005"]
    # Megatron-LM's tracker names the checkpoint resumed from, not the one set aside
    assert (run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text() == "5\n"


def test_resume_with_no_usable_checkpoint_is_one_line_and_changes_nothing(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    for ckpt_dir in complete_checkpoints(run / "checkpoints"):
        (ckpt_dir / "common.pt").write_bytes(b"garbage")
    before = digest(run)
    line = one_line_error(octo(run, iters=8))
    assert line.startswith("octo: error: no usable checkpoint under") and "iter_0000004: common.pt" in line
    assert digest(run) == before


def test_torn_metrics_line_rules(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')  # damage inside the file is not a torn write
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl:2: not a JSON record"):
        read_metrics(path)


def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_same_command(tmp_path):
    run = tmp_path / "run"
    proc = octo(run, hook=(1, "SIGKILL"))  # a node failure at the end of step 2, no checkpoint yet
    assert proc.returncode == -9
    assert steps(run) == [1] and not complete_checkpoints(run / "checkpoints")
    proc = ok(octo(run))
    assert "holds no complete checkpoint" in proc.stdout and "starting at step 0" in proc.stdout
    assert steps(run) == [1, 2, 3, 4, 5, 6]


def test_a_setup_mistake_writes_no_recipe(tmp_path):
    run = tmp_path / "run"
    line = one_line_error(octo(run, f"checkpoint.load={tmp_path / 'missing'}"))
    assert "no complete checkpoint under" in line
    assert not (run / "recipe.yaml").exists() and not (run / "metrics.jsonl").exists()
    ok(octo(run, iters=2))  # the corrected command needs no --overwrite


def test_run_stage_sets_the_old_run_aside_until_setup_passes(tmp_path, monkeypatch):
    """run_stage's --overwrite in one process, the parallel context stubbed (a real setup refusing a recipe is
    test_a_setup_mistake_writes_no_recipe): setup sees no old output; a refused setup puts everything back; an
    accepted one removes the old run once recipe.yaml is written."""
    import types

    import torch.distributed as dist

    from megatron_octo import parallel
    from megatron_octo.config import ConfigError
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.training import stage

    monkeypatch.setattr(parallel, "initialize", lambda *a, **k: types.SimpleNamespace(is_main=True))
    monkeypatch.setattr(parallel, "destroy", lambda ctx: None)
    monkeypatch.setattr(dist, "barrier", lambda: None)
    recipe = load_recipe("tiny-cpu")
    run = tmp_path / "run"
    (run / "checkpoints" / "iter_0000006").mkdir(parents=True)
    (run / "init").mkdir()  # a converted checkpoint.load of the old run: the new one may load another
    for name in ("metrics.jsonl", "recipe.yaml", "train_summary.json"):
        (run / name).write_text(f"old {name}\n")
    before = digest(run)

    def refused(ctx):
        assert sorted(p.name for p in run.iterdir()) == [stage.ASIDE]
        (run / "metrics.jsonl").write_text("new\n")
        raise ConfigError("data.mixture=typo: no such mixture")

    with pytest.raises(ConfigError, match="typo"):
        stage.run_stage(stage.TRAIN_STAGE, recipe, run, True, refused)
    assert digest(run) == before

    def accepted(ctx):
        def session():
            assert sorted(p.name for p in run.iterdir()) == ["recipe.yaml"]  # the old run is gone only now
            return {"steps_run": 1}
        return session

    stage.run_stage(stage.TRAIN_STAGE, recipe, run, True, accepted)
    assert sorted(p.name for p in run.iterdir()) == ["recipe.yaml", "train_summary.json"]
    assert "tiny-cpu" in (run / "recipe.yaml").read_text()


def test_an_interrupted_overwrite_keeps_the_old_run(tmp_path):
    """What `--overwrite` does to the run directory when the process dies in setup (SIGKILL: no handler runs)."""
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.training.stage import ASIDE, TRAIN_STAGE, check_run_dir, prepare_run_dir
    from megatron_octo.utils.io import OutputExistsError

    run = tmp_path / "run"
    (run / "checkpoints" / "iter_0000006").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("old\n")
    (run / "recipe.yaml").write_text("old\n")
    (run / "notes.txt").write_text("mine\n")  # not a stage output: never moved
    prepare_run_dir(run, TRAIN_STAGE, overwrite=True)  # then killed during setup; the new run wrote metrics
    (run / "metrics.jsonl").write_text("new\n")
    assert sorted(p.name for p in run.iterdir()) == [ASIDE, "metrics.jsonl", "notes.txt"]
    with pytest.raises(OutputExistsError, match="interrupted.*pass --overwrite again.*move its contents back"):
        check_run_dir(run, load_recipe("tiny-cpu"), False, TRAIN_STAGE)
    aside = prepare_run_dir(run, TRAIN_STAGE, overwrite=True)  # again: the aside still holds the old run
    assert sorted(p.name for p in run.iterdir()) == [ASIDE, "notes.txt"]
    assert (aside / "metrics.jsonl").read_text() == "old\n" and (aside / "checkpoints" / "iter_0000006").is_dir()
    (run / "recipe.yaml").write_text("new\n")  # this time the new run started: the old one may go
    prepare_run_dir(run, TRAIN_STAGE, overwrite=False)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "recipe.yaml"]


def test_a_no_op_resume_keeps_the_last_real_summary(saved_run, tmp_path):
    run = copy_run(saved_run, tmp_path)
    before = (run / "train_summary.json").read_text()
    proc = ok(octo(run))
    assert "nothing to do" in proc.stdout
    assert (run / "train_summary.json").read_text() == before


@pytest.mark.parametrize("override, says", [("model.num_layers=2", "model.num_layers=4 there vs 2 here"),
                                           ("--recipe-name", "recipe 'tiny-cpu', not 'tiny-cpu-qwen2'")])
def test_resuming_with_another_model_or_recipe_is_one_line(saved_run, tmp_path, override, says):
    run = copy_run(saved_run, tmp_path)
    before = digest(run)
    if override == "--recipe-name":
        proc = octo(run, recipe="tiny-cpu-qwen2")
    else:
        proc = octo(run, override)
    line = one_line_error(proc)
    assert line.startswith(f"octo: error: run directory {run} holds a run of") and says in line
    assert "--overwrite" in line
    assert digest(run) == before



# A run directory that is a file, lies under a file or is read-only: tests/test_bad_input.py (in process).

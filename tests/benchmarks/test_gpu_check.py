"""benchmarks/gpu_check.sh without a GPU: shellcheck, its refusals, the summary arithmetic on hand-made figures, and
the whole script in ``--cpu-smoke`` mode (every step at toy size on CPU, as it would run on the GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def helper():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(args, env_extra, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    proc = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_help_is_the_header():
    proc = run_script(["--help"], {})
    assert proc.returncode == 0 and proc.stdout.startswith("One prepared GPU check")
    assert "--fetch-wheels" in proc.stdout and "set -uo" not in proc.stdout


def test_refusals_are_one_line(tmp_path):
    proc = run_script([], {})
    assert proc.returncode == 2 and "set OUT" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = run_script(["--bogus"], {"OUT": str(tmp_path / "o")})
    assert proc.returncode == 2 and "unknown argument '--bogus'" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_script(["--wheels", str(tmp_path / "empty")], {"OUT": str(tmp_path / "o")})
    assert proc.returncode == 2 and "--fetch-wheels" in proc.stderr and "no wheels" in proc.stderr


def test_summary_arithmetic_on_hand_made_figures(helper, tmp_path):
    def put(name, data):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))

    put("peak", {"tflops": 800.0, "dtype": "bfloat16"})
    put("ours", {"tokens_per_s": 39_000.0, "tflops": 380.0, "first_loss": 12.0, "last_loss": 9.0})
    put("ref_amp", {"tokens_per_s": 20_000.0, "tflops": 190.0, "first_loss": 12.0, "last_loss": 9.1})
    put("ref_bf16", {"tokens_per_s": 30_000.0, "tflops": 290.0, "first_loss": 12.0, "last_loss": 9.2})
    put("roundtrip_compare", {"bit_identical": True, "tensors": 38})
    s = helper.summarize(tmp_path, {"device": "H200"})
    # 39,000 / max(20,000, 30,000) = 1.3 (goal met at exactly 1.3); 380 / 800 = 0.475 >= 0.45.
    assert s["ratio_vs_best_reference"] == pytest.approx(1.3) and s["goal_ratio_met"] is True
    assert s["ours_share_of_peak"] == pytest.approx(0.475) and s["goal_peak_share_met"] is True
    assert s["roundtrip_ok"] is True
    text = helper.markdown({**s, "recipe": "octothinker-1b-stable", "overrides": [], "steps": 20, "warmup": 3})
    assert "| octo train (Megatron-Core) | 39,000 | 380 | 47.5% |" in text
    assert "1.30x (goal >= 1.3x: met)" in text and "47.5% (goal >= 45%: met)" in text
    assert "no verify line" in text  # the two --verify steps left no figures here


def test_missing_steps_are_reported_not_invented(helper, tmp_path):
    s = helper.summarize(tmp_path, {})
    assert s["ours"] is None and s["ratio_vs_best_reference"] is None and s["goal_ratio_met"] is None
    assert s["roundtrip_ok"] is False
    assert "failed or not run" in helper.markdown({**s, "overrides": []})


@pytest.mark.script_smoke  # about 9 processes, 2-4 minutes on 2 cores: `make test-smoke` (in .ci/run)
def test_cpu_smoke_runs_every_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = run_script(["--cpu-smoke"], {"OUT": str(out), "WORK": str(work), "GPU_CHECK_STEPS": "4"}, timeout=1500)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-5000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "cpu" and s["recipe"] == "tiny-cpu" and s["steps"] == 4
    assert s["ours"]["tokens_per_s"] > 0 and s["ours"]["tflops_source"] == "metrics.jsonl model_tflops"
    for mode in ("amp", "bf16"):
        ref = s[f"reference_{mode}"]
        assert ref["mode"] == mode and ref["tokens_per_s"] > 0 and ref["attention"] == "sdpa"
    assert s["peak"]["tflops"] > 0
    assert s["roundtrip"]["roundtrip_to_mcore"]["ok"] and s["roundtrip"]["roundtrip_to_hf"]["ok"]
    assert s["roundtrip_ok"] is True
    # What comes back from the GPU machine: at most 8 plain files directly in $OUT.
    files = sorted(p.name for p in out.iterdir())
    assert files == ["log.txt", "metrics.jsonl", "summary.json", "summary.md"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert "FAILED" not in log

"""A plain script that scores at its top level, without ``if __name__ == "__main__":``: the pool's workers re-import
it (multiprocessing's worker start does), so they die at start; the error says exactly that and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_unguarded_script_gets_an_error_naming_the_guard(tmp_path):
    script = tmp_path / "score.py"
    script.write_text('from megatron_octo.rl.reward import math_reward\n'
                      'print(math_reward("\\\\boxed{\\\\frac{1}{2}}", "\\\\dfrac{2}{4}"))\n')
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"re-imports your script {script}" in last and 'if __name__ == "__main__":' in last, last
    guarded = tmp_path / "guarded.py"
    guarded.write_text('from megatron_octo.rl.reward import math_reward\n\nif __name__ == "__main__":\n'
                       '    print(math_reward("\\\\boxed{\\\\frac{1}{2}}", "\\\\dfrac{2}{4}"))\n')
    ok = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=300,
                        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert ok.returncode == 0 and ok.stdout.strip() == "1.0", ok.stderr[-500:]

"""megatron_octo._jit_hook: Megatron-Core's fusions skip torch.compile where CUDA is absent, and only there."""

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the hook only acts where CUDA is absent")

# A fusion module decorates its functions with jit_fuser at import (fused_bias_swiglu: the Llama MLP's).
_PROBE = """
import sys
{first}
import megatron.core.fusions.fused_bias_swiglu as swiglu
import megatron.core.jit as jit
print(jit.jit_fuser is jit.noop_decorator, "torch._inductor.compile_fx" in sys.modules,
      hasattr(swiglu.swiglu, "_torchdynamo_orig_callable"))
"""


def _probe(first):
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(first=first)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_importing_megatron_octo_first_leaves_fusions_uncompiled():
    assert _probe("import megatron_octo") == ["True", "False", "False"]


def test_without_the_hook_megatron_compiles_its_fusions():
    """The control: the same imports with megatron.core first give torch.compile's wrappers and load Inductor."""
    assert _probe("import megatron.core") == ["False", "True", "True"]


def test_install_is_idempotent_and_a_no_op_after_megatron_is_imported():
    from megatron_octo import _jit_hook

    _jit_hook.install()
    _jit_hook.install()
    assert sum(isinstance(f, _jit_hook._JitFinder) for f in sys.meta_path) <= 1
    import megatron.core.jit  # noqa: F401  (imported by now in this process either way)

    _jit_hook.uninstall()
    _jit_hook.install()
    assert not any(isinstance(f, _jit_hook._JitFinder) for f in sys.meta_path)

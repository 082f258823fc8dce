"""megatron_octo._mcore_import: importing megatron_octo first makes Megatron-Core skip torch.compile where CUDA is
absent (and only there) and skip wandb while it imports, and leaves ``import wandb`` working afterwards."""

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the jit part only acts where CUDA is absent")

# A fusion module decorates its functions with jit_fuser at import (fused_bias_swiglu: the Llama MLP's).
_PROBE = """
import sys
{first}
import megatron.core, megatron.core.models.gpt, megatron.core.optimizer, megatron.core.dist_checkpointing
import megatron.core.fusions.fused_bias_swiglu as swiglu
import megatron.core.jit as jit
from megatron.core.inference.contexts import dynamic_context
had_wandb = "wandb" in sys.modules
import wandb
print(jit.jit_fuser is jit.noop_decorator, "torch._inductor.compile_fx" in sys.modules,
      hasattr(swiglu.swiglu, "_torchdynamo_orig_callable"), had_wandb, dynamic_context.HAVE_WANDB,
      callable(getattr(wandb, "init", None)))
"""


def _probe(first):
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(first=first)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_importing_megatron_octo_first_skips_compile_and_wandb_and_wandb_still_imports():
    # fuser disabled, no Inductor, plain functions, wandb not imported by Megatron-Core, its no-W&B path, wandb works
    assert _probe("import megatron_octo") == ["True", "False", "False", "False", "False", "True"]


def test_without_the_hook_megatron_compiles_its_fusions_and_imports_wandb():
    """The control: the same imports with megatron.core first give torch.compile's wrappers, Inductor and wandb."""
    assert _probe("import megatron.core") == ["False", "True", "True", "True", "True", "True"]


def test_a_wandb_imported_before_is_left_to_megatron():
    assert _probe("import wandb, megatron_octo")[3:5] == ["True", "True"]


def test_install_is_idempotent_and_a_no_op_after_megatron_is_imported():
    from megatron_octo import _mcore_import

    _mcore_import.install()
    _mcore_import.install()
    for name in ("megatron.core", "megatron.core.jit"):
        assert sum(isinstance(f, _mcore_import._Finder) and f.name == name for f in sys.meta_path) <= 1
    import megatron.core.jit  # noqa: F401  (imported by now in this process either way)

    _mcore_import.uninstall()
    _mcore_import.install()
    assert not any(isinstance(f, _mcore_import._Finder) for f in sys.meta_path)

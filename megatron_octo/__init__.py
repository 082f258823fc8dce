"""megatron-octo: OctoThinker mid-training and RL on Megatron-Core."""

from megatron_octo import _jit_hook
from megatron_octo.version import __version__

# Before anything imports Megatron-Core: its fusions skip torch.compile on machines without CUDA (see _jit_hook).
_jit_hook.install()

__all__ = ["__version__"]

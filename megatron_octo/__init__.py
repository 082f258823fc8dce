"""megatron-octo: OctoThinker mid-training and RL on Megatron-Core."""

from megatron_octo import _mcore_import
from megatron_octo.version import __version__

# Before anything imports Megatron-Core: its fusions skip torch.compile on CPU, and it skips wandb (see _mcore_import).
_mcore_import.install()

__all__ = ["__version__"]

"""megatron-octo: OctoThinker mid-training and RL on Megatron-Core."""

from megatron_octo.version import __version__

__all__ = ["__version__"]

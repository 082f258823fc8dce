"""``python -m megatron_octo`` does exactly what the ``octo`` command does (and is what torchrun launches)."""

from megatron_octo.cli import main

# The guard matters: multiprocessing's spawn start method (used by Megatron-Core's checkpoint writer) re-imports
# the main module in its children, which must not run the command again.
if __name__ == "__main__":
    raise SystemExit(main())

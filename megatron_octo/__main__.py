"""``python -m megatron_octo`` does exactly what the ``octo`` console script does."""

from megatron_octo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

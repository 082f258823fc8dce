"""The data pipeline's user-facing error: one line naming the problem and the fix (``octo`` exits 2 on it)."""

from __future__ import annotations

from megatron_octo.errors import OctoError


class DataError(OctoError, ValueError):
    """Bad input to the data pipeline: a malformed line, a missing field, a missing tokenizer or dataset."""

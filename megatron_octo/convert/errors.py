"""Errors of the converter: user mistakes end as one ``octo: error:`` line (see ``megatron_octo.cli``)."""

from __future__ import annotations


class ConvertError(ValueError):
    """The input cannot be converted as asked; the message names the problem and the fix."""


class VerifyError(ConvertError):
    """``--verify`` found the two sides' logits further apart than the tolerance; nothing was written."""

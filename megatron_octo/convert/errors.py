"""Errors of the converter: user mistakes end as one ``octo: error:`` line (see ``megatron_octo.cli``)."""

from __future__ import annotations

from megatron_octo.errors import OctoError


class ConvertError(OctoError, ValueError):
    """The input cannot be converted as asked; the message names the problem and the fix."""


class VerifyError(ConvertError):
    """``--verify`` found the two sides' logits further apart than the tolerance; nothing was written. Not a usage
    mistake but a conversion that does not reproduce its source: exit status 1."""

    exit_code = 1

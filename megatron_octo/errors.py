"""The one base class of user errors.

A user mistake (a bad recipe or override, an existing output, a missing input, a layout the world cannot hold) is
raised as a subclass of ``OctoError`` whose message is one line naming the problem and the fix. ``octo`` catches
``OctoError`` once and prints ``octo: error: <message>``, exiting with the class's ``exit_code`` (2 unless a subclass
says otherwise); anything else is a bug and keeps its traceback. This module imports nothing, so every package (and
the lean serving venv) can derive from it.
"""

from __future__ import annotations


class OctoError(Exception):
    """A user mistake: reported as one line, exit status ``exit_code`` (2), no traceback."""

    exit_code: int = 2

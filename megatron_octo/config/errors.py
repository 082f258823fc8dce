"""The configuration's user error: a recipe, override or mixture that is wrong."""

from __future__ import annotations

from megatron_octo.errors import OctoError


class ConfigError(OctoError, ValueError):
    """A recipe or override is wrong; the message is one line naming the field and the fix."""

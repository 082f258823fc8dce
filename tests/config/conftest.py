"""Shared checks for the config tests."""

from megatron_octo.config import ConfigError


def assert_one_line_error(excinfo, *fragments: str) -> str:
    """The error is a ConfigError on one line that contains every fragment (the field names)."""
    assert excinfo.type is ConfigError
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message

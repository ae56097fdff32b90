"""The errors that are the user's to fix: the CLI prints them as one line (exit code 2), never a traceback.

A leaf module: it imports nothing, so every layer can raise them.
"""


class ConfigError(ValueError):
    """A recipe or stage config that cannot be used; the message names the file and the field."""


class DataError(ValueError):
    """An input dataset that a stage cannot use; the message names the path and the column."""

"""Chat templates a recipe gives by hand, read without importing torch or transformers."""

from __future__ import annotations

from pathlib import Path

from prefopt.errors import ConfigError


def chat_template_text(value: str, where: str = "chat_template") -> str:
    """The template's Jinja text: ``value`` itself, or the text of the .jinja file it names. Whether it compiles is
    checked by :func:`prefopt.generation.engines.read_chat_template`, which imports transformers."""
    if value.endswith(".jinja") and "{" not in value and "\n" not in value:
        if not Path(value).is_file():
            raise ConfigError(f"{where}: .jinja file not found (given {value!r})")
        return Path(value).read_text()
    if "{{" not in value and "{%" not in value:
        raise ConfigError(
            f"{where}: neither a Jinja template nor a .jinja file (given {value[:60]!r}, expected "
            "Jinja text with {{ }} / {% %} or a path ending in .jinja)"
        )
    return value

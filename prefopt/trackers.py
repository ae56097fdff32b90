"""The trackers a recipe may name in ``training.trl.report_to``, checked when the recipe loads (imports no torch)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from prefopt.errors import ConfigError

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # report_to name -> package
INSTALL = 'pip install "prefopt[track]"'


def requested_trackers(report_to: Any) -> list[str]:
    """``report_to`` as a list of names (``None`` and ``'none'`` are no tracker)."""
    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    return [n for n in names if n not in (None, "none")]


def check_report_to(report_to: Any, where: str) -> None:
    """Raise :class:`ConfigError` for a tracker prefopt does not log to, or one whose package is missing."""
    for name in requested_trackers(report_to):
        if name not in TRACKERS:
            raise ConfigError(
                f"{where}: {name!r} is not a tracker prefopt logs its statistics to (given "
                f"{report_to!r}; expected 'none' or any of {sorted(TRACKERS)})"
            )
        if find_spec(TRACKERS[name]) is None:
            raise ConfigError(
                f"{where}: {name} is not installed (given {report_to!r}); run: {INSTALL} "
                f"(or pip install {TRACKERS[name]})"
            )

"""Children that never outlive prefopt: each runs in its own process group, and SIGINT/SIGTERM reach all of it.

``prefopt`` starts accelerate launchers (which start ranks), generation workers and vLLM engines. A kill of
``prefopt`` alone would leave them running, holding GPUs. :func:`run_child` starts a command in a new session
(its own process group), forwards SIGINT and SIGTERM to the whole group while it waits, and on any way out of the
wait (an exception, an interrupt) terminates the group, then kills it after a grace period. :func:`exit_on_signals`
makes SIGTERM end prefopt like Ctrl-C does, so the clean-up above runs and the exit code is 128 + signal (130 for
SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence

GRACE_S = 10.0  # how long a child group gets between SIGTERM and SIGKILL


class Terminated(BaseException):
    """prefopt received SIGTERM (a BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it)."""


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever is left after ``grace_s``."""
    if process.poll() is None:
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(process, signal.SIGKILL)  # members that outlived the leader, too
    process.wait()


@contextlib.contextmanager
def forwarding(process: subprocess.Popen) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM sent to prefopt go to the child's group as well."""

    def forward(signum, _frame):
        _kill_group(process, signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_child(command: Sequence[str], **popen_kwargs) -> int:
    """Run ``command`` in its own process group and return its exit code; if prefopt is interrupted or fails while
    waiting, the whole group is stopped before the exception goes on."""
    process = subprocess.Popen(list(command), start_new_session=True, **popen_kwargs)
    try:
        with forwarding(process):
            return process.wait()
    except BaseException:
        stop_group(process)
        raise


def exit_on_signals() -> None:
    """Turn SIGTERM into :class:`Terminated` (SIGINT already raises KeyboardInterrupt) in the main thread."""

    def terminate(_signum, _frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)

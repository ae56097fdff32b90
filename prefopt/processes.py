"""Children that never outlive prefopt: each runs in its own process group, and SIGINT/SIGTERM reach all of it.

``prefopt`` starts accelerate launchers (which start ranks), generation workers and vLLM engines. A kill of
``prefopt`` alone would leave them running, holding GPUs. :func:`run_child` starts a command in a new session
(its own process group), forwards SIGINT and SIGTERM to the whole group while it waits, and on any way out of the
wait (an exception, an interrupt) terminates the group, then kills it after a grace period. :func:`exit_on_signals`
makes SIGTERM end prefopt like Ctrl-C does, so the clean-up above runs and the exit code is 128 + signal (130 for
SIGINT, 143 for SIGTERM).

A SIGKILL of prefopt runs no clean-up, so on Linux the group's leader is a small supervisor
(``python -m prefopt.processes COMMAND...``) that the kernel signals when prefopt dies (``PR_SET_PDEATHSIG``): it
then stops the whole group as above. A rerun can therefore never train into a directory that an orphaned rank is
still writing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

GRACE_S = 10.0  # how long a child group gets between SIGTERM and SIGKILL
PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies


class ChildFailed(RuntimeError):
    """A command prefopt ran (training ranks, scoring ranks, generation workers) exited with an error; its own output
    above says why. The CLI prints this in one line (exit code 1): finished work is kept and a rerun resumes."""


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
    waiting, the whole group is stopped before the exception goes on, and if prefopt is killed, its supervisor stops
    the group (Linux)."""
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-m", "prefopt.processes", str(os.getpid()), *command]
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


def _stop_own_group() -> None:
    """SIGTERM every other member of this process group, then SIGKILL the group (this process included)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and _group_has_others():
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)


def _group_has_others() -> bool:
    group = os.getpgid(0)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == group:
                    return True
    return False


def supervise(parent: int, command: Sequence[str]) -> int:
    """Run ``command`` in this process group; when ``parent`` (prefopt) dies, however it died, stop the whole
    group. Signals prefopt forwards reach every member of the group directly, so here they only wake the wait."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # prefopt died before prctl took effect
        return 143
    child = subprocess.Popen(list(command))

    def on_signal(signum, _frame):
        if os.getppid() != parent:  # the kernel's death signal: prefopt is gone
            _stop_own_group()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2:]))

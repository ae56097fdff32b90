"""Helpers the benchmark scripts share."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space that exec creates;
    ru_maxrss is inherited across fork and exec, so a spawned worker would report at least its parent's size."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

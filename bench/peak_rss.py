"""Peak resident memory of this process, for the benchmarks that run each measurement in a child process."""

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """The high-water mark of this process's RSS in MiB.

    Linux's ``ru_maxrss`` is carried across ``exec``: a child started from a big parent reports the parent's peak.
    ``VmHWM`` belongs to the current program alone, so it is used where it exists.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS

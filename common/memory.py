"""Peak resident memory (RSS) of this process, resettable so that each benchmark cell gets its own peak.

Linux keeps the peak RSS as VmHWM in /proc/self/status; writing "5" to /proc/self/clear_refs resets it to
the current RSS. Elsewhere the peak since process start (getrusage) is the best available.
"""
import resource
import sys


def reset_rss_peak():
    """Reset the process's peak RSS to its current RSS; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_mb():
    """Peak RSS in MiB since the last reset (VmHWM), else since process start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 1024.0)   # bytes on macOS, KiB on Linux

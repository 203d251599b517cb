"""What every benchmark prints first and last: the machine and its load.

A figure from one CPU is not another's (the same command gave 16 s and 6 s for TRL's W1 step on
two 2-core machines of this project), and a busy machine skews ratios: each benchmark names both
beside its numbers. Imported by the scripts in this folder (`python benchmarks/NAME.py` puts it
on the path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), "?" where it is not there."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def describe() -> str:
    """One line: time, CPU model, CPU count and load."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{stamp}; {cpu_model()}, {os.cpu_count()} CPUs; load average {load_average()}"

"""What every benchmark script prints about the machine it ran on.

Imported by the scripts in this folder (run as ``python bench/<script>.py``,
so this folder is on ``sys.path``).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform


def version(dist: str) -> str:
    """Installed version of a distribution, or ``"not installed"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def memory() -> str:
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        return "RAM ?"
    return f"{kb / 1024 / 1024:.1f} GiB RAM"


def cpu_line() -> str:
    """``- CPU: <model>, N logical cores (U usable), M GiB RAM``."""
    return f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores ({usable_cores()} usable), {memory()}"


def python_line() -> str:
    return f"- Python {platform.python_version()}, {platform.system()} {platform.release()}"

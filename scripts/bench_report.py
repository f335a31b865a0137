"""One line per performance goal: what we measured, the raw peer in the same run, the ratio,
and pass or miss. Shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass

import numpy as np


@dataclass
class Goal:
    name: str
    figure: str
    raw: str
    ratio: float | None
    target: str
    passed: bool | None  # None: reported, no target

    def line(self) -> str:
        verdict = {True: "pass", False: "MISS", None: "info"}[self.passed]
        ratio = f"{self.ratio:5.2f}x" if self.ratio is not None else "     -"
        return (
            f"  {verdict:4s}  {self.name:44s} {self.figure:>22s}  raw {self.raw:>22s}  "
            f"{ratio}  ({self.target})"
        )


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99))


def machine() -> str:
    """The machine, named in the report (figures mean little without it)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{os.cpu_count()} cores, {cpu}{memory}, Python {platform.python_version()}"


def rss_mb() -> float:
    """This process's resident memory, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def print_goals(goals: list[Goal]) -> None:
    print("\n== goals")
    for goal in goals:
        print(goal.line())
    met = sum(g.passed is True for g in goals)
    targets = sum(g.passed is not None for g in goals)
    print(f"  {met} of {targets} goals met")

"""Small helpers shared by the benchmarks: medians, figure lines, resident memory.

Every benchmark prints plain ``name: value unit`` lines and ``ratio name: x.xx (ours/baseline)``
lines, so the runner in ``bench/__main__.py`` can pick the ratios out of any module's output
without knowing what the module measures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

RATIO_PREFIX = "ratio "


def median(values: list[float]) -> float:
    """The median of a non-empty list of measurements."""
    if not values:
        raise ValueError("median of no measurements")
    return statistics.median(values)


def time_median(fn: Callable[[], object], repeats: int) -> float:
    """Call ``fn`` ``repeats`` times; return the median wall time of one call, in seconds."""
    samples: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return median(samples)


def median_of_runs(run: Callable[[], float], repeats: int) -> float:
    """Median of ``repeats`` self-timed runs (``run`` returns the seconds it measured).

    For runs whose setup and teardown (starting threads, activating actors) must stay out
    of the figure: the run times only its own measured phase.
    """
    return median([run() for _ in range(repeats)])


async def amedian_of_runs(run: Callable[[], Awaitable[float]], repeats: int) -> float:
    """The async sibling of :func:`median_of_runs`."""
    return median([await run() for _ in range(repeats)])


def format_value(value: float) -> str:
    """Human figures: thousands separators for big numbers, three significant digits below."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def figure(name: str, value: float, unit: str) -> str:
    """One figure line: ``name: value unit``."""
    return f"{name}: {format_value(value)} {unit}"


def ratio(
    name: str, ours: float, baseline: float, baseline_name: str, target: float | None = None
) -> str:
    """One ratio line: ``ratio name: x.xx (ours/baseline)``, plus the target when there is one.

    Both figures must be "bigger is better" (throughputs), so a ratio above 1 means we win.
    """
    value = ours / baseline
    line = f"{RATIO_PREFIX}{name}: {value:.2f} (ours/{baseline_name})"
    if target is not None:
        verdict = "met" if value >= target else "MISSED"
        line += f"  target >= {target:g}: {verdict}"
    return line


def rss_mib() -> float:
    """This process's resident set size in MiB, from /proc/self/status (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            kib = int(line.split()[1])
            return kib / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")

"""The benchmark harness: figure formatting, medians, memory reading and the runner."""

from __future__ import annotations

import pytest

from bench import __main__ as runner
from bench import _savina_pykka
from bench._common import figure, median, median_of_runs, ratio, rss_mib, time_median


def test_figure_and_ratio_lines() -> None:
    assert figure("pykka ping-pong", 38_919.4, "msgs/s") == "pykka ping-pong: 38,919 msgs/s"
    assert figure("lag p99", 0.01234, "s") == "lag p99: 0.0123 s"
    assert ratio("counting", 900.0, 100.0, "pykka") == "ratio counting: 9.00 (ours/pykka)"
    assert ratio("ping-pong", 400.0, 100.0, "pykka", 5.0).endswith("target >= 5: MISSED")
    assert ratio("ping-pong", 600.0, 100.0, "pykka", 5.0).endswith("target >= 5: met")


def test_medians() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    runs = iter([5.0, 1.0, 3.0])
    assert median_of_runs(lambda: next(runs), 3) == 3.0
    calls: list[int] = []
    assert time_median(lambda: calls.append(1), 4) >= 0.0
    assert len(calls) == 4
    with pytest.raises(ValueError):
        median([])


def test_rss_is_plausible() -> None:
    assert 5.0 < rss_mib() < 100_000.0


def test_runner_selection_and_missing_module() -> None:
    assert runner._selected(None) == list(runner.BENCHMARKS)
    assert runner._selected("savina, timer_lag") == ["savina", "timer_lag"]
    with pytest.raises(SystemExit):
        runner._selected("savina,nope")
    outcome = runner._run_one("no_such_benchmark", quick=True, timeout=10.0)
    assert outcome.status == "missing"


def test_pykka_half_counts_and_completes() -> None:
    assert _savina_pykka.counting(500) > 0.0
    assert _savina_pykka.pingpong(50) > 0.0
    assert _savina_pykka.thread_ring(5, 40) > 0.0
    assert _savina_pykka.forkjoin(3, 20) > 0.0


def test_our_half_counts_and_completes() -> None:
    import anyio

    from bench import _savina_ours

    async def run_all() -> None:
        assert await _savina_ours.counting(500) > 0.0
        assert await _savina_ours.pingpong(50) > 0.0
        assert await _savina_ours.thread_ring(5, 40) > 0.0
        assert await _savina_ours.forkjoin(3, 20) > 0.0

    anyio.run(run_all, backend="asyncio")

"""The flash crowd benchmark on tiny sizes: its checks hold, and they check something.

Real processes all the way (nats-server, the node, the load generator, the no-op
responder); only the sizes are small. The figures are not judged here, the numbers the
benchmark's verdict rests on are: nothing oversold, every acknowledged join held, and
after a SIGKILL mid-crowd no acknowledged join lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench._flash_load import LoadResult
from bench.flash_crowd import (
    CrashResult,
    CrowdResult,
    Sizes,
    crash,
    crowd,
    report_crash,
    report_crowd,
)


@pytest.mark.anyio
@pytest.mark.integration
async def test_crowd_sells_exactly_the_stock_and_measures_a_ceiling(tmp_path: Path) -> None:
    sizes = Sizes(attempts=300, stock=60, concurrency=50, timeout_s=5.0)
    lines: list[str] = []
    result = await crowd(sizes, tmp_path, echo=lines.append)

    assert result.quantity_total == 60
    assert result.load.sent == 300
    assert result.load.ok == 60  # a stock far below the crowd sells out exactly
    assert result.load.codes == {"sold_out": 240}
    assert result.held_quantity == 60 == result.view_reserved
    assert result.acked_missing == 0 and result.held_unacked == 0
    assert result.oversell == 0
    assert result.consistent
    assert result.ceiling is not None
    assert result.ceiling.ok == 300 and result.ceiling.codes == {}
    assert result.load.p50_ms > 0 and result.load.p99_ms >= result.load.p50_ms

    assert report_crowd(result, sizes, echo=lines.append)
    assert "oversell: 0" in lines
    assert any(line.startswith("ratio flash crowd accepted joins vs no-op: ") for line in lines)
    if sys.platform == "linux":  # CPU per reply comes from /proc
        spent = (result.server_cpu_s, result.ceiling_server_cpu_s, result.ceiling_responder_cpu_s)
        assert all(cpu is not None and cpu >= 0 for cpu in spent), spent  # 10 ms ticks
        budget = [line for line in lines if " CPU per reply, all processes: " in line]
        assert [line.split(" ", 1)[0] for line in budget] == ["crowd", "no-op"]


@pytest.mark.anyio
@pytest.mark.integration
async def test_crash_mid_crowd_loses_no_acknowledged_join(tmp_path: Path) -> None:
    sizes = Sizes(attempts=500, stock=400, concurrency=50, kill_after=100, timeout_s=2.0)
    lines: list[str] = []
    result = await crash(sizes, tmp_path, echo=lines.append)

    assert result.acked_at_kill >= 100
    assert result.load.ok >= result.acked_at_kill
    assert result.load.ok < 400  # killed while the window was still selling
    assert result.lost == 0
    assert result.held_quantity == result.load.ok + result.held_unacked == result.view_reserved
    assert result.oversell == 0
    assert report_crash(result, sizes, echo=lines.append)
    assert "acknowledged joins lost: 0" in lines


def _load(ok: int, sent: int) -> LoadResult:
    return LoadResult(
        sent=sent,
        replies=sent,
        ok=ok,
        codes={"sold_out": sent - ok},
        elapsed_s=1.0,
        ok_elapsed_s=0.5,
        p50_ms=1.0,
        p99_ms=2.0,
        max_ms=3.0,
        ok_p50_ms=1.0,
        ok_p99_ms=2.0,
        cpu_s=0.5,
        ok_join_ids=[f"J{i}" for i in range(ok)],
    )


def test_the_verdict_fails_on_oversell_and_on_lost_joins() -> None:
    sizes = Sizes(attempts=100, stock=10)
    held = {f"J{i}" for i in range(12)}
    oversold = CrowdResult(
        window_id="W",
        quantity_total=10,
        setup_s=1.0,
        load=_load(12, 100),
        ceiling=None,
        node_cpu_s=None,
        view_reserved=12,
        held_quantity=len(held),
        acked_missing=0,
        held_unacked=0,
    )
    lines: list[str] = []
    assert oversold.oversell == 2 and not oversold.consistent
    assert report_crowd(oversold, sizes, echo=lines.append) is False
    assert "oversell: 2" in lines

    lost = CrashResult(
        window_id="W",
        quantity_total=10,
        load=_load(6, 100),
        acked_at_kill=5,
        restart_s=0.3,
        held_quantity=5,
        view_reserved=5,
        lost=1,
        held_unacked=0,
    )
    assert report_crash(lost, sizes, echo=lines.append) is False
    assert "acknowledged joins lost: 1" in lines

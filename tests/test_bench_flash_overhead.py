"""What metrics and tracing cost on the flash crowd (``--mode overhead``): the "off" side
is truly off, the comparison prints its lines, and its verdict rests on CPU per reply.

A node without a ``/metrics`` endpoint times no turns, so the comparison's "off" crowds
pay nothing for metrics; the comparison itself runs here on a few hundred joins (real
processes, as in ``test_flash_crowd_smoke``): its figures are not judged, its lines are.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from actors.nats import NatsServer, NatsTransport
from bench import __main__ as runner
from bench._flash_load import LoadResult
from bench.flash_crowd import CrowdResult, Sizes, compare_metrics, report_overhead
from iceshop.node import ShopNode
from iceshop.settings import Settings
from tests.shop_client import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.parametrize("metrics", [False, True], ids=["no endpoint", "endpoint"])
async def test_turns_are_timed_only_when_the_node_serves_metrics(
    tmp_path: Path, metrics: bool
) -> None:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n1",
            auth="off",
            metrics_port=_free_port() if metrics else 0,
            campaign_interval_s=3600.0,
        )
        async with ShopNode(settings) as node, NatsTransport(server.url) as t:
            c = Client(t)
            for b in ("B1", "B2"):
                await c.ok(f"buyers.{b}.register", {"name": b, "phone": "+905551112233"})
            assert node.system is not None
            assert node.system.dispatcher.timed is metrics
            buyer = node.system.kind("buyer")
            assert buyer.handled >= 2  # the turns ran either way
            timed = buyer.turn_seconds.snapshot()
    if metrics:
        assert timed.count >= 1 and timed.sum > 0
    else:
        assert timed.count == 0 and timed.sum == 0.0


def _result(replies: int, node_cpu_s: float | None, ok_per_s: float = 1000.0) -> CrowdResult:
    load = LoadResult(
        sent=replies,
        replies=replies,
        ok=100,
        codes={"sold_out": replies - 100},
        elapsed_s=1.0,
        ok_elapsed_s=100 / ok_per_s,
        p50_ms=1.0,
        p99_ms=2.0,
        max_ms=3.0,
        ok_p50_ms=1.0,
        ok_p99_ms=2.0,
        cpu_s=0.5,
        ok_join_ids=[f"J{i}" for i in range(100)],
    )
    return CrowdResult(
        window_id="W",
        quantity_total=100,
        setup_s=1.0,
        load=load,
        ceiling=None,
        node_cpu_s=node_cpu_s,
        view_reserved=100,
        held_quantity=100,
        acked_missing=0,
        held_unacked=0,
    )


def test_the_verdict_is_node_cpu_per_reply_against_ten_percent() -> None:
    # 40 us per reply off; on: 42 us (+5 %) and 46 us (+15 %), throughput alike.
    off = [_result(10_000, 0.40), _result(10_000, 0.41), _result(10_000, 0.39)]
    for on_cpu_s, met in ((0.42, True), (0.46, False)):
        lines: list[str] = []
        on = [_result(10_000, on_cpu_s)] * 3
        assert report_overhead("m+t", {False: off, True: on}, lines.append) is met
        assert "m+t off, median of 3: accepted 1,000 joins/s, all replies 10,000/s" in lines[0]
        assert "node CPU per reply 40.0 us (runs 39.0-41.0 us, +/-2 %)" in lines[0]
        assert "ratio flash crowd accepted joins, m+t on vs off: 1.00 (ours/m+t off)" in lines
        assert "ratio flash crowd all replies, m+t on vs off: 1.00 (ours/m+t off)" in lines
        (cpu,) = [line for line in lines if line.startswith("ratio flash crowd node CPU")]
        assert cpu.endswith("target < 1.10: " + ("met" if met else "MISSED"))
        (verdict,) = [line for line in lines if line.startswith("verdict: ")]
        if met:
            assert (
                "+5.0 % CPU per reply (median of the pairs; medians 42.0 us on, 40.0 us off)"
                in (verdict)
            )
            assert verdict.endswith("below the 10 % target")
        else:
            assert "+15.0 % CPU per reply" in verdict and "NOT below the 10 % target" in verdict
    no_cpu = {False: [_result(100, None)], True: [_result(100, None)]}
    lines = []
    assert report_overhead("m+t", no_cpu, lines.append) is None
    assert lines[-1].startswith("verdict: m+t overhead not judged")


def test_the_verdict_takes_the_pairs_ratios_so_a_slowing_machine_is_not_overhead() -> None:
    # Every pair: on costs 5 % more than off, run back to back. The machine slows down for
    # the later crowds, so the medians of the sides alone would say +50 %.
    off = [_result(10_000, 0.30), _result(10_000, 0.30), _result(10_000, 0.45)]
    on = [_result(10_000, 0.315), _result(10_000, 0.4725), _result(10_000, 0.4725)]
    lines: list[str] = []
    assert report_overhead("m+t", {False: off, True: on}, lines.append) is True
    assert "pairs' CPU per reply on/off: 1.05, 1.57, 1.05; ratio of the medians 1.57" in lines
    (verdict,) = [line for line in lines if line.startswith("verdict: ")]
    assert "+5.0 % CPU per reply" in verdict


def test_make_bench_runs_the_comparison_as_its_own_entry() -> None:
    assert "flash_overhead" in runner.BENCHMARKS
    assert runner.COMMANDS["flash_overhead"] == ("flash_crowd", "--mode", "overhead")


@pytest.mark.anyio
@pytest.mark.integration
async def test_the_comparison_prints_crowds_medians_ratios_and_a_verdict(tmp_path: Path) -> None:
    sizes = Sizes(attempts=300, stock=30, concurrency=50, timeout_s=5.0)
    lines: list[str] = []
    good = await compare_metrics(
        sizes,
        tmp_path,
        "external",
        1,
        lines.append,
        metrics=True,
        tracing=True,
        trace_ratio=1.0,  # a few hundred joins: the default 0.1 % might export no span
        warmup=True,
    )
    assert good, lines
    text = "\n".join(lines)
    assert lines[0].startswith("-- metrics (/metrics scraped every 1 s) and tracing ")
    assert sum(line.startswith("metrics+tracing off (warm-up, not counted): ") for line in lines)
    on = [line for line in lines if line.startswith("metrics+tracing on : ")]
    off = [line for line in lines if line.startswith("metrics+tracing off: ")]
    assert len(on) == len(off) == 1, text
    assert " scrapes, " in on[0] and " spans exported" in on[0]
    assert "scrapes" not in off[0] and "spans" not in off[0]
    assert any(line.startswith("metrics+tracing on, median of 1: ") for line in lines)
    assert any(line.startswith("metrics+tracing off, median of 1: ") for line in lines)
    for name in ("accepted joins", "all replies"):
        assert f"ratio flash crowd {name}, metrics+tracing on vs off: " in text
    assert any(line.startswith("metrics+tracing comparison wall time: ") for line in lines)
    if sys.platform == "linux":  # CPU per reply comes from /proc
        assert "node CPU per reply" in off[0] and "node CPU per reply" in on[0]
        assert "ratio flash crowd node CPU per reply, metrics+tracing on vs off: " in text
        assert any(line.startswith("verdict: metrics+tracing on cost the node ") for line in lines)

"""Flash crowd: many concurrent joins to one hot window over NATS, with a stock far below
the crowd, against a no-op NATS responder measured in the same run.

Everything is real and in separate processes: a nats-server with JetStream, the node
(``python -m iceshop.node``, its SQLite journal in a temporary directory), the load
generator (``bench._flash_load``) and, for the ceiling, a no-op responder. The setup
speaks only the contract's subjects: a seller lists ``stock`` units, ``attempts`` buyers
register, a few intents make the campaign propose the window, and the benchmark waits
until it is active.

* **crowd**: the load process sends one join per registered buyer, ``concurrency`` in
  flight. Figures: accepted joins/s (``ok`` replies over the time to the last one, the
  selling phase), all replies/s over the whole crowd (after the sell-out every join is
  answered ``sold_out``), p50/p99 latency and the count of each error code. Then the
  oversell check, on the window actor's own answers (``get`` and every page of
  ``reservations``): the quantity held must equal the number of ``ok`` replies, every
  acknowledged join must be held, and nothing beyond ``quantity_total``. Then the node
  stops and the same load (same bodies, same concurrency, same count) runs against the
  no-op responder: the ceiling. Target (DESIGN.md): joins at >= 60 % of the ceiling.
* **crash**: the same setup with a stock large enough to still be selling when the node
  is killed with SIGKILL after ``kill_after`` acknowledged joins. The load runs on
  (requests then fail as ``no_responders`` or ``timeout``); the node restarts on the
  same data directory, and every join the load process saw acknowledged must be in the
  window's reservations. Joins that were committed but whose reply was lost in the
  crash may be there too (reported, not a fault).
* **budget**: the crowd with a stock as large as the crowd (every join accepted), so the
  whole run is the accepted-join path. Both runs (ours and the no-op ceiling) then report
  the CPU each process spent per reply (node, projector, nats-server and load generator;
  no-op responder, nats-server and load generator), read from ``/proc``: where the
  machine's cores go, and what is left for the node within the target. The crowd mode
  reports the same figures, for a mix of accepted and ``sold_out`` replies.

* **overhead**: what metrics and tracing cost, measured on and off in one run: a
  warm-up crowd (not counted), then ``--pairs`` crowds with both off and as many with
  both on, alternating (off on, on off, ...), each on a fresh nats-server and node. Off:
  no ``/metrics`` endpoint (so the node does not time its turns either) and no tracer;
  on: ``/metrics`` scraped every second and traces sampled at ``--trace-ratio`` (the
  node's default) exported to the stand-in collector. Each crowd's line, the medians,
  the ratios of the medians on / off (accepted joins, all replies) and the verdict on
  the node's CPU per reply, on / off, against the design's 10 %: throughput moves by
  more than that between two crowds on a shared machine, the CPU a reply costs the node
  much less. The verdict takes the median of the pairs' own ratios (each pair ran back
  to back, so a machine that slows down during the run does not count as overhead).
  That CPU is counted from the first join to 1.5 s after the last reply (the tracer's
  last export of the crowd's spans included; the scrape that reads the final count
  after it is not). ``python -m bench`` runs this as its own entry,
  ``flash_overhead``.

    python -m bench.flash_crowd [--quick] [--mode crowd|crash|both|budget|overhead]
                                [--projector external|node]
                                [--metrics off|on|compare] [--tracing off|on|compare]
                                [--trace-ratio R] [--pairs N]

``--projector`` says where the read model's projector runs: ``external`` (the default) in
an ``iceshop projector`` process beside the node, on the same data directory, the node
started with ``ICESHOP_READMODEL_PROJECTOR=external``; ``node`` inside the node, as before
that setting existed. The mode used is printed with the figures. In the crash mode only
the node is killed and restarted: the external projector keeps running, as it would when
a node crashes in production.

``--metrics on`` starts the node with its Prometheus endpoint (``metrics_port``) and
scrapes it every second during the crowd, as a (busy) Prometheus would; the figures then
include the scrapes and the node's own count of accepted joins, which must match the
load's. ``--metrics compare`` then runs more crowds in the same run, without and with
metrics alternately (``--pairs`` of each, default 5, 2 with ``--quick``; the first crowd
is the warm-up), and reports as ``--mode overhead`` does. A node without the endpoint
does not time its turns; its other runtime counters are always on
(``bench.metrics_overhead`` measures the turn timing alone).

``--tracing on`` starts the node with ``trace_exporter = "otlp"`` and
``trace_sample_ratio = R`` (``--trace-ratio``, default: the node's default), exporting
to a stand-in collector in this process (``bench._otlp_sink``, which counts the spans it
receives); the load sends no ``traceparent``, so each join's trace starts at the node.
``--tracing compare`` runs crowds with nothing on and with tracing on, alternately, like
``--metrics compare``; add ``--metrics on`` to have the "on" crowds scrape metrics too,
which measures the whole observability cost against none.

Exits non-zero on any oversell, any acknowledged join lost, or a count that does not
add up.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from actors.nats import NatsServer, NatsTransport
from bench._common import RATIO_PREFIX, figure, median, ratio
from bench._flash_load import LoadResult, LoadSpec
from bench._flash_shop import (
    REPO_ROOT,
    BenchError,
    NodeProcess,
    ShopClient,
    child_env,
    cpu_seconds_of,
)
from bench._otlp_sink import OtlpSink
from iceshop.cli.lifecycle import configure_logging
from iceshop.settings import Settings

__all__ = [
    "CrashResult",
    "CrowdResult",
    "MetricsWatch",
    "Sizes",
    "crash",
    "crowd",
    "main",
    "report_crash",
    "report_crowd",
]

NOOP_SUBJECT = "flashnoop.>"
CROWD_PREFIX = "C"

Echo = Callable[[str], None]


class Sizes(msgspec.Struct, frozen=True, kw_only=True):
    attempts: int
    """Join attempts, one per distinct registered buyer."""
    stock: int
    """Units the seller lists; the window takes all of them."""
    concurrency: int = 200
    """Requests in flight at once in the load process."""
    connections: int = 1
    timeout_s: float = 10.0
    kill_after: int = 0
    """Crash mode: SIGKILL the node once this many joins were acknowledged."""


CROWD = Sizes(attempts=60_000, stock=6_000)
CROWD_QUICK = Sizes(attempts=8_000, stock=800)
BUDGET = Sizes(attempts=30_000, stock=30_000)
BUDGET_QUICK = Sizes(attempts=8_000, stock=8_000)
OVERHEAD = Sizes(attempts=24_000, stock=2_400)
"""The crowd of ``--mode overhead``: the crowd's mix (a tenth accepted), smaller, so that
a warm-up and :data:`COMPARE_PAIRS` pairs fit in about two minutes."""
OVERHEAD_QUICK = Sizes(attempts=4_000, stock=400)
CRASH = Sizes(attempts=12_000, stock=8_000, kill_after=3_000, timeout_s=3.0)
CRASH_QUICK = Sizes(attempts=2_000, stock=1_500, kill_after=500, timeout_s=3.0)


class MetricsWatch(msgspec.Struct, frozen=True, kw_only=True):
    """The node's ``/metrics`` scraped during the crowd (``--metrics on``)."""

    scrapes: int
    failed: int
    scrape_p50_ms: float
    scrape_max_ms: float
    accepted: int
    """``iceshop_joins_total{outcome="accepted"}`` after the crowd."""


class CrowdResult(msgspec.Struct, frozen=True, kw_only=True):
    window_id: str
    quantity_total: int
    setup_s: float
    load: LoadResult
    ceiling: LoadResult | None
    node_cpu_s: float | None
    """CPU seconds the node process used during the crowd (None off Linux)."""
    readmodel_projector: str = "external"
    """Where the read model's projector ran: ``external`` (its own process) or ``node``."""
    projector_cpu_s: float | None = None
    """CPU seconds the external projector used during the crowd (None when in the node)."""
    view_reserved: int
    """``quantity_reserved`` in the window's view after the crowd."""
    held_quantity: int
    """Quantity of unreleased reservations, summed over every page of the query."""
    acked_missing: int
    """Acknowledged joins that are not among the held reservations."""
    held_unacked: int
    """Held reservations that no ``ok`` reply acknowledged."""
    metrics: MetricsWatch | None = None
    """The scrapes of the node's metrics endpoint, when it had one."""
    trace_spans: int | None = None
    """Spans the stand-in collector received from the node (None: tracing off)."""
    server_cpu_s: float | None = None
    """CPU seconds the nats-server used during the crowd (None off Linux)."""
    ceiling_server_cpu_s: float | None = None
    """CPU seconds the nats-server used during the no-op run."""
    ceiling_responder_cpu_s: float | None = None
    """CPU seconds the no-op responder used during its run."""

    @property
    def oversell(self) -> int:
        return max(
            0, self.held_quantity - self.quantity_total, self.view_reserved - self.quantity_total
        )

    @property
    def consistent(self) -> bool:
        """Held quantity == ``ok`` replies == the view's figure, and nothing oversold."""
        return (
            self.oversell == 0
            and self.acked_missing == 0
            and self.held_unacked == 0
            and self.held_quantity == self.load.ok == self.view_reserved
        )


class CrashResult(msgspec.Struct, frozen=True, kw_only=True):
    window_id: str
    quantity_total: int
    load: LoadResult
    acked_at_kill: int
    """``ok`` replies the load process had seen when the kill was sent."""
    restart_s: float
    held_quantity: int
    view_reserved: int
    lost: int
    """Acknowledged joins not among the held reservations after the restart."""
    held_unacked: int
    """Held reservations whose reply the crash swallowed (committed, not acknowledged)."""

    @property
    def oversell(self) -> int:
        return max(
            0, self.held_quantity - self.quantity_total, self.view_reserved - self.quantity_total
        )


# -- processes -------------------------------------------------------------------------------


async def _lines(stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[str]:
    buffered = BufferedByteReceiveStream(stream)
    while True:
        try:
            line = await buffered.receive_until(b"\n", 65_536)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return
        yield line.decode("utf-8", "replace")


async def run_load_process(
    spec: LoadSpec, workdir: Path, on_line: Callable[[str], None] | None = None
) -> LoadResult:
    """Run the load generator in its own process; ``on_line`` sees its stdout lines."""
    out = workdir / f"load-{spec.subject.split('.', 1)[0]}.json"
    command = [sys.executable, "-m", "bench._flash_load", "load"]
    command += [msgspec.json.encode(spec).decode(), str(out)]
    async with await anyio.open_process(command, cwd=REPO_ROOT, env=child_env()) as process:
        assert process.stdout is not None
        async for line in _lines(process.stdout):
            if on_line is not None:
                on_line(line)
        code = await process.wait()
    if code != 0:
        raise BenchError(f"the load process exited with status {code}")
    data = await anyio.Path(out).read_bytes()
    return msgspec.json.decode(data, type=LoadResult)


@asynccontextmanager
async def noop_responder(url: str) -> AsyncIterator[int]:
    """The no-op responder process, ready when entered (yields its pid), stopped when
    left."""
    command = [sys.executable, "-m", "bench._flash_load", "noop", url, NOOP_SUBJECT]
    async with await anyio.open_process(command, cwd=REPO_ROOT, env=child_env()) as process:
        try:
            assert process.stdout is not None
            try:
                with anyio.fail_after(30):
                    line = await BufferedByteReceiveStream(process.stdout).receive_until(
                        b"\n", 1024
                    )
            except (anyio.EndOfStream, anyio.IncompleteRead):
                raise BenchError("the no-op responder exited before it was ready") from None
            if line.strip() != b"ready":
                raise BenchError(f"the no-op responder said {line!r}, not ready")
            yield process.pid
        finally:
            if process.returncode is None:
                process.terminate()


@asynccontextmanager
async def shop_environment(
    workdir: Path,
    readmodel_projector: str = "external",
    metrics_port: int = 0,
    extra_settings: dict[str, str] | None = None,
) -> AsyncIterator[tuple[NatsServer, NodeProcess, ShopClient]]:
    """A nats-server, a node process (with its projector process when ``external``) and a
    client connection; all stopped when left. ``metrics_port``: the node's metrics
    endpoint (0: none); ``extra_settings``: more node settings."""
    async with NatsServer(jetstream=True, store_dir=workdir / "jetstream") as server:
        node = NodeProcess(
            server.url,
            workdir / "node",
            workdir / "node.log",
            readmodel_projector=readmodel_projector,
            extra_settings={"metrics_port": str(metrics_port), **(extra_settings or {})},
        )
        async with NatsTransport(server.url, name="flash-bench") as transport:
            client = ShopClient(transport)
            try:
                yield server, node, client
            finally:
                with anyio.CancelScope(shield=True):
                    await node.stop()


def _spec(url: str, subject: str, sizes: Sizes, progress_every: int = 0) -> LoadSpec:
    return LoadSpec(
        url=url,
        subject=subject,
        count=sizes.attempts,
        concurrency=sizes.concurrency,
        connections=sizes.connections,
        buyer_prefix=CROWD_PREFIX,
        join_prefix="J",
        timeout_s=sizes.timeout_s,
        progress_every=progress_every,
    )


async def _prepare(
    node: NodeProcess, client: ShopClient, sizes: Sizes
) -> tuple[dict[str, Any], float]:
    started = anyio.current_time()
    await node.start(client)
    await client.setup(sizes.attempts, sizes.stock, CROWD_PREFIX)
    view = await client.active_window()
    return view, anyio.current_time() - started


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SCRAPE_EVERY_S = 1.0
_ACCEPTED_SERIES = 'iceshop_joins_total{outcome="accepted"} '


class _Scraper:
    """GETs the node's ``/metrics`` every :data:`SCRAPE_EVERY_S` until cancelled."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.times_ms: list[float] = []
        self.failed = 0
        self.last = ""

    async def scrape(self, http: httpx.AsyncClient) -> None:
        started = anyio.current_time()
        try:
            response = await http.get(self.url)
            response.raise_for_status()
        except httpx.HTTPError:
            self.failed += 1
            return
        self.times_ms.append(1000 * (anyio.current_time() - started))
        self.last = response.text

    async def run(self) -> None:
        """Scrape at 0.5 s, 1.5 s, ... into the crowd: about one scrape per second of it,
        as a scraper at a random phase would make (one at 0 s would add a scrape to every
        crowd, a lot for a crowd of a second)."""
        async with httpx.AsyncClient(timeout=10.0) as http:
            await anyio.sleep(SCRAPE_EVERY_S / 2)
            while True:
                await self.scrape(http)
                await anyio.sleep(SCRAPE_EVERY_S)

    async def result(self) -> MetricsWatch:
        async with httpx.AsyncClient(timeout=10.0) as http:
            await self.scrape(http)  # after the crowd: the final count
        accepted = 0
        for line in self.last.splitlines():
            if line.startswith(_ACCEPTED_SERIES):
                accepted = round(float(line.removeprefix(_ACCEPTED_SERIES)))
        times = sorted(self.times_ms) or [0.0]
        return MetricsWatch(
            scrapes=len(self.times_ms),
            failed=self.failed,
            scrape_p50_ms=median(times),
            scrape_max_ms=times[-1],
            accepted=accepted,
        )


# -- modes -------------------------------------------------------------------------------


async def crowd(
    sizes: Sizes,
    workdir: Path,
    *,
    ceiling: bool = True,
    readmodel_projector: str = "external",
    metrics: bool = False,
    tracing: bool = False,
    trace_ratio: float = 1.0,
    settle_s: float = 0.0,
    echo: Echo = print,
) -> CrowdResult:
    """The crowd mode (see the module docstring), its files under ``workdir``; with
    ``metrics`` the node serves ``/metrics`` and it is scraped during the crowd; with
    ``tracing`` it exports its spans (``trace_ratio`` of the joins) to a stand-in
    collector. ``settle_s``: the node's CPU is read that long after the last reply (the
    crowd's last spans are exported by then), not at once."""
    async with OtlpSink() as sink:
        result = await _crowd(
            sizes,
            workdir,
            ceiling=ceiling,
            readmodel_projector=readmodel_projector,
            metrics=metrics,
            trace_settings=_trace_settings(sink, trace_ratio) if tracing else None,
            settle_s=settle_s,
            echo=echo,
        )
    if tracing:
        result = msgspec.structs.replace(result, trace_spans=sink.spans)
    return result


def _trace_settings(sink: OtlpSink, ratio: float) -> dict[str, str]:
    return {
        "trace_exporter": "otlp",
        "trace_endpoint": sink.endpoint,
        "trace_sample_ratio": repr(ratio),
    }


async def _crowd(
    sizes: Sizes,
    workdir: Path,
    *,
    ceiling: bool,
    readmodel_projector: str,
    metrics: bool,
    trace_settings: dict[str, str] | None,
    settle_s: float,
    echo: Echo,
) -> CrowdResult:
    port = free_port() if metrics else 0
    async with shop_environment(workdir, readmodel_projector, port, trace_settings) as (
        server,
        node,
        client,
    ):
        view, setup_s = await _prepare(node, client, sizes)
        window_id = view["window_id"]
        echo(f"window {window_id}: quantity_total {view['quantity_total']}, setup {setup_s:.1f}s")
        cpu_before = await node.cpu_seconds()
        projector_before = await node.projector_cpu_seconds()
        server_before = await cpu_seconds_of(server.pid)
        spec = _spec(server.url, f"iceshop.windows.{window_id}.join", sizes)
        scraper = _Scraper(port) if metrics else None
        async with anyio.create_task_group() as tg:
            if scraper is not None:
                tg.start_soon(scraper.run)
            load = await run_load_process(spec, workdir)
            tg.cancel_scope.cancel()
        if settle_s > 0:
            await anyio.sleep(settle_s)
        cpu_after = await node.cpu_seconds()
        projector_after = await node.projector_cpu_seconds()
        server_cpu = _spent(server_before, await cpu_seconds_of(server.pid))
        # The last scrape reads the final count, after the crowd: not part of its CPU.
        watch = None if scraper is None else await scraper.result()
        if node.died:
            raise BenchError(f"the node died during the crowd; log tail:\n{node.tail()}")
        if node.projector is not None and node.projector.died:
            raise BenchError(f"the projector died; log tail:\n{node.projector.tail()}")
        after = await client.ok(f"windows.{window_id}.get")
        held = await client.reservations(window_id)
        await node.stop()
        noop = None
        ceiling_server_cpu = responder_cpu = None
        if ceiling:
            async with noop_responder(server.url) as responder:
                server_before = await cpu_seconds_of(server.pid)
                responder_before = await cpu_seconds_of(responder)
                noop = await run_load_process(
                    _spec(server.url, f"flashnoop.windows.{window_id}.join", sizes), workdir
                )
                responder_cpu = _spent(responder_before, await cpu_seconds_of(responder))
                ceiling_server_cpu = _spent(server_before, await cpu_seconds_of(server.pid))
    acked = frozenset(load.ok_join_ids)
    node_cpu = _spent(cpu_before, cpu_after)
    projector_cpu = _spent(projector_before, projector_after)
    return CrowdResult(
        window_id=window_id,
        quantity_total=view["quantity_total"],
        setup_s=setup_s,
        load=load,
        ceiling=noop,
        node_cpu_s=node_cpu,
        readmodel_projector=readmodel_projector,
        projector_cpu_s=projector_cpu,
        view_reserved=after["quantity_reserved"],
        held_quantity=held.held_quantity,
        acked_missing=len(acked - held.held_join_ids),
        held_unacked=len(held.held_join_ids - acked),
        metrics=watch,
        server_cpu_s=server_cpu,
        ceiling_server_cpu_s=ceiling_server_cpu,
        ceiling_responder_cpu_s=responder_cpu,
    )


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def crash(
    sizes: Sizes, workdir: Path, *, readmodel_projector: str = "external", echo: Echo = print
) -> CrashResult:
    """The crash mode (see the module docstring), its files under ``workdir``. Only the
    node is killed and restarted; an external projector runs on throughout."""
    if not 0 < sizes.kill_after < sizes.stock:
        raise ValueError("crash mode needs 0 < kill_after < stock")
    every = max(1, min(100, sizes.kill_after // 10))
    async with shop_environment(workdir, readmodel_projector) as (server, node, client):
        echo(f"read model projector: {_where(readmodel_projector)}")
        view, _ = await _prepare(node, client, sizes)
        window_id = view["window_id"]
        echo(f"window {window_id}: quantity_total {view['quantity_total']}")
        killed_at: list[int] = []

        def on_line(line: str) -> None:
            if killed_at or not line.startswith("acked "):
                return
            acked = int(line.split()[1])
            if acked >= sizes.kill_after and node.process is not None:
                node.process.kill()  # SIGKILL, at once; reaped after the load
                killed_at.append(acked)

        subject = f"iceshop.windows.{window_id}.join"
        spec = _spec(server.url, subject, sizes, progress_every=every)
        load = await run_load_process(spec, workdir, on_line)
        await node.kill()
        if not killed_at:
            raise BenchError(
                f"the node never acknowledged {sizes.kill_after} joins: {load.ok} ok, {load.codes}"
            )
        restart_s = await node.start(client)
        after = await client.ok(f"windows.{window_id}.get")
        held = await client.reservations(window_id)
    acked = frozenset(load.ok_join_ids)
    return CrashResult(
        window_id=window_id,
        quantity_total=view["quantity_total"],
        load=load,
        acked_at_kill=killed_at[0],
        restart_s=restart_s,
        held_quantity=held.held_quantity,
        view_reserved=after["quantity_reserved"],
        lost=len(acked - held.held_join_ids),
        held_unacked=len(held.held_join_ids - acked),
    )


# -- report ------------------------------------------------------------------------------


def _where(readmodel_projector: str) -> str:
    if readmodel_projector == "external":
        return "external (an `iceshop projector` process beside the node)"
    return "node (inside the node process)"


def _percent(cpu_s: float, wall_s: float) -> float:
    """CPU seconds per wall second, in percent of one core."""
    return 100 * cpu_s / wall_s if wall_s > 0 else 0.0


def _codes(prefix: str, load: LoadResult, echo: Echo) -> None:
    for code, count in load.codes.items():
        echo(figure(f"{prefix} {code}", count, "replies" if ":" not in code else "requests"))


def report_crowd(r: CrowdResult, sizes: Sizes, echo: Echo = print) -> bool:
    load = r.load
    echo(
        f"crowd: {sizes.attempts} join attempts, stock {r.quantity_total}, "
        f"{sizes.concurrency} in flight over {sizes.connections} connection(s)"
    )
    echo(figure("crowd accepted joins", load.ok_per_s, "joins/s"))
    echo(figure("crowd all replies", load.replies_per_s, "replies/s"))
    echo(figure("crowd latency p50", load.p50_ms, "ms"))
    echo(figure("crowd latency p99", load.p99_ms, "ms"))
    echo(figure("crowd latency max", load.max_ms, "ms"))
    echo(figure("crowd accepted joins latency p50", load.ok_p50_ms, "ms"))
    echo(figure("crowd accepted joins latency p99", load.ok_p99_ms, "ms"))
    echo(figure("crowd ok", load.ok, "replies"))
    _codes("crowd", load, echo)
    echo(figure("crowd duration", load.elapsed_s, "s"))
    if r.node_cpu_s is not None:
        echo(
            figure(
                "node CPU during the crowd", _percent(r.node_cpu_s, load.elapsed_s), "% of a core"
            )
        )
    if r.projector_cpu_s is not None:
        echo(
            figure(
                "projector CPU during the crowd",
                _percent(r.projector_cpu_s, load.elapsed_s),
                "% of a core",
            )
        )
    echo(f"read model projector: {_where(r.readmodel_projector)}")
    echo(figure("load generator CPU", _percent(load.cpu_s, load.elapsed_s), "% of a core"))
    echo(figure("window quantity_reserved", r.view_reserved, "units"))
    echo(figure("reservations held", r.held_quantity, "units"))
    echo(figure("acknowledged joins not held", r.acked_missing, "joins"))
    echo(figure("held reservations not acknowledged", r.held_unacked, "joins"))
    echo(f"oversell: {r.oversell}")
    if r.ceiling is not None:
        noop = r.ceiling
        echo(figure("no-op responder replies", noop.replies_per_s, "replies/s"))
        echo(figure("no-op latency p50", noop.p50_ms, "ms"))
        echo(figure("no-op latency p99", noop.p99_ms, "ms"))
        echo(
            figure("no-op load generator CPU", _percent(noop.cpu_s, noop.elapsed_s), "% of a core")
        )
        _codes("no-op", noop, echo)
        echo(
            ratio(
                "flash crowd accepted joins vs no-op",
                load.ok_per_s,
                noop.replies_per_s,
                "no-op",
                target=0.6,
            )
        )
        echo(
            ratio(
                "flash crowd all replies vs no-op",
                load.replies_per_s,
                noop.replies_per_s,
                "no-op",
            )
        )
    if r.metrics is not None:
        m = r.metrics
        echo(figure("metrics scrapes during the crowd", m.scrapes, "scrapes"))
        echo(figure("metrics scrape p50", m.scrape_p50_ms, "ms"))
        echo(figure("metrics scrape max", m.scrape_max_ms, "ms"))
        echo(figure("metrics accepted joins", m.accepted, "joins"))
        if m.failed or m.accepted != load.ok:
            echo(f"!! metrics: {m.failed} failed scrapes; {m.accepted} accepted vs {load.ok} ok")
    if r.trace_spans is not None:
        echo(figure("spans exported to the collector", r.trace_spans, "spans"))
    _report_budget(r, echo)
    if not r.consistent:
        echo("!! the window's reservations do not match the acknowledged joins")
    return r.consistent


def _report_budget(r: CrowdResult, echo: Echo) -> None:
    """CPU per reply of each process, ours and the ceiling's: where the machine's cores
    went (every figure is a process's CPU seconds over the replies its run got)."""
    ours = {"node": r.node_cpu_s}
    if r.readmodel_projector == "external":  # else its CPU is the node's
        ours["projector"] = r.projector_cpu_s
    ours |= {"nats-server": r.server_cpu_s, "load generator": r.load.cpu_s}
    _budget_lines("crowd", ours, r.load.replies, echo)
    if r.ceiling is not None:
        noop = {
            "no-op responder": r.ceiling_responder_cpu_s,
            "nats-server": r.ceiling_server_cpu_s,
            "load generator": r.ceiling.cpu_s,
        }
        _budget_lines("no-op", noop, r.ceiling.replies, echo)


def _budget_lines(prefix: str, spent: dict[str, float | None], replies: int, echo: Echo) -> None:
    if replies <= 0 or any(cpu is None for cpu in spent.values()):
        return
    total = 0.0
    for name, cpu in spent.items():
        assert cpu is not None
        total += cpu
        echo(figure(f"{prefix} CPU per reply, {name}", 1e6 * cpu / replies, "us"))
    echo(figure(f"{prefix} CPU per reply, all processes", 1e6 * total / replies, "us"))


def report_crash(r: CrashResult, sizes: Sizes, echo: Echo = print) -> bool:
    load = r.load
    echo(
        f"crash: {sizes.attempts} join attempts, stock {r.quantity_total}, "
        f"SIGKILL after {sizes.kill_after} acknowledged joins"
    )
    echo(figure("acknowledged when killed", r.acked_at_kill, "joins"))
    echo(figure("acknowledged in all", load.ok, "joins"))
    _codes("crash", load, echo)
    echo(figure("node restart to first answer", r.restart_s, "s"))
    echo(figure("reservations held after restart", r.held_quantity, "units"))
    echo(figure("committed but unacknowledged", r.held_unacked, "joins"))
    echo(f"oversell: {r.oversell}")
    echo(f"acknowledged joins lost: {r.lost}")
    return r.lost == 0 and r.oversell == 0 and r.view_reserved == r.held_quantity


COMPARE_PAIRS = 5
"""Pairs of crowds, observability off and on, in a comparison (``--pairs``): the selling
phase of a crowd lasts about a second, so one pair alone says little."""
COMPARE_PAIRS_QUICK = 2
OVERHEAD_TARGET = 0.10
"""What metrics and tracing may cost (DESIGN.md): node CPU per reply on / off below 1.10."""
COMPARE_SETTLE_S = 1.5
"""How long after a compared crowd its node's CPU is read: the tracer exports its spans
every second (``iceshop.observability.tracing``), and the last export is part of the
cost. Off and on crowds wait alike."""


def _cpu_per_reply_us(r: CrowdResult) -> float | None:
    """The node's CPU microseconds per reply of the crowd (None without /proc)."""
    if r.node_cpu_s is None or r.load.replies <= 0:
        return None
    return 1e6 * r.node_cpu_s / r.load.replies


def _one_line(label: str, r: CrowdResult) -> str:
    line = (
        f"{label}: accepted {r.load.ok_per_s:,.0f} joins/s, "
        f"all replies {r.load.replies_per_s:,.0f}/s"
    )
    per_reply = _cpu_per_reply_us(r)
    if per_reply is not None:
        line += f", node CPU per reply {per_reply:.1f} us"
    line += f"; setup {r.setup_s:.1f} s, crowd {r.load.elapsed_s:.1f} s"
    if r.metrics is not None:
        line += f", {r.metrics.scrapes} scrapes"
    if r.trace_spans is not None:
        line += f", {r.trace_spans:,} spans exported"
    return line


def _spread(values: list[float]) -> str:
    """``min-max`` of the values, and their half-range in percent of the median."""
    middle = median(values)
    half = 50 * (max(values) - min(values)) / middle if middle > 0 else 0.0
    return f"{min(values):.1f}-{max(values):.1f} us, +/-{half:.0f} %"


def report_overhead(
    label: str, runs: dict[bool, list[CrowdResult]], echo: Echo = print
) -> bool | None:
    """Medians of each side, the ratios of the medians on / off, and the verdict on node
    CPU per reply against :data:`OVERHEAD_TARGET`: True met, False missed, None when
    there is no CPU figure (off Linux)."""
    cpu: dict[bool, list[float]] = {}
    for on in (False, True):
        side = runs[on]
        ok = median([r.load.ok_per_s for r in side])
        replies = median([r.load.replies_per_s for r in side])
        line = (
            f"{label} {'on' if on else 'off'}, median of {len(side)}: "
            f"accepted {ok:,.0f} joins/s, all replies {replies:,.0f}/s"
        )
        per_reply = [_cpu_per_reply_us(r) for r in side]
        if all(v is not None for v in per_reply):
            cpu[on] = [v for v in per_reply if v is not None]
            line += f", node CPU per reply {median(cpu[on]):.1f} us (runs {_spread(cpu[on])})"
        echo(line)
    for name, field in (("accepted joins", "ok_per_s"), ("all replies", "replies_per_s")):
        on_median = median([getattr(r.load, field) for r in runs[True]])
        off_median = median([getattr(r.load, field) for r in runs[False]])
        echo(ratio(f"flash crowd {name}, {label} on vs off", on_median, off_median, f"{label} off"))
    if len(cpu) < 2 or median(cpu[False]) <= 0:
        echo(f"verdict: {label} overhead not judged: no CPU figures (they come from /proc)")
        return None
    on_us, off_us = median(cpu[True]), median(cpu[False])
    # The machine's speed drifts over a comparison (other work, frequency): each pair's
    # two crowds ran back to back, so the median of the pairs' ratios is judged; the
    # ratio of the two medians is shown beside it.
    pair_ratios = [on / off for on, off in zip(cpu[True], cpu[False], strict=False) if off > 0]
    value = median(pair_ratios)
    met = value < 1 + OVERHEAD_TARGET
    echo(
        f"pairs' CPU per reply on/off: {', '.join(f'{r:.2f}' for r in pair_ratios)}; "
        f"ratio of the medians {on_us / off_us:.2f}"
    )
    echo(
        f"{RATIO_PREFIX}flash crowd node CPU per reply, {label} on vs off: {value:.2f} "
        f"(median of {len(pair_ratios)} pairs, on/off, lower is better)  "
        f"target < {1 + OVERHEAD_TARGET:.2f}: {'met' if met else 'MISSED'}"
    )
    echo(
        f"verdict: {label} on cost the node {100 * (value - 1):+.1f} % CPU per reply "
        f"(median of the pairs; medians {on_us:.1f} us on, {off_us:.1f} us off): "
        f"{'below' if met else 'NOT below'} the {100 * OVERHEAD_TARGET:.0f} % target"
    )
    return met


async def compare_metrics(
    sizes: Sizes,
    workdir: Path,
    readmodel_projector: str,
    pairs: int,
    echo: Echo = print,
    *,
    tracing: bool = False,
    metrics: bool = True,
    trace_ratio: float = 1.0,
    warmup: bool = False,
) -> bool:
    """Crowds with nothing on and with ``metrics`` and/or ``tracing`` on, alternating
    (off on, on off, ...), and :func:`report_overhead` on them. Off: no ``/metrics``
    endpoint (so the node times no turns) and no tracer. ``warmup``: one more crowd
    first, not counted (else the crowd run before them is the warm-up). False when a
    crowd's checks failed; a missed target is reported, not a failure."""
    parts = [
        *(["metrics (/metrics scraped every 1 s)"] if metrics else []),
        *([f"tracing (sample ratio {trace_ratio:g}, OTLP)"] if tracing else []),
    ]
    what = " and ".join(parts)
    label = "+".join(p.split(" ", 1)[0] for p in parts)
    echo(
        f"-- {what}: off vs on, {pairs} crowds each, alternating; {sizes.attempts} join "
        f"attempts, stock {sizes.stock}"
    )
    runs: dict[bool, list[CrowdResult]] = {False: [], True: []}
    good = True
    started = anyio.current_time()
    order = [on for i in range(pairs) for on in ((False, True) if i % 2 == 0 else (True, False))]
    for n, on in enumerate([None, *order] if warmup else order):
        where = workdir / f"crowd-{label}-{n}-{'on' if on else 'off'}"
        await anyio.Path(where).mkdir()
        r = await crowd(
            sizes,
            where,
            ceiling=False,
            readmodel_projector=readmodel_projector,
            metrics=bool(on) and metrics,
            tracing=bool(on) and tracing,
            trace_ratio=trace_ratio,
            settle_s=COMPARE_SETTLE_S,
            echo=lambda _line: None,
        )
        good &= r.consistent
        if not r.consistent:
            echo("!! the window's reservations do not match the acknowledged joins")
        if on is None:
            echo(_one_line(f"{label} off (warm-up, not counted)", r))
            continue
        runs[on].append(r)
        echo(_one_line(f"{label} {'on ' if on else 'off'}", r))
        if r.metrics is not None and (r.metrics.failed or r.metrics.accepted != r.load.ok):
            echo(f"!! metrics: {r.metrics.failed} failed scrapes; {r.metrics.accepted} accepted")
            good = False
        if r.trace_spans == 0:
            echo("!! tracing: the collector received no spans")
            good = False
    report_overhead(label, runs, echo)
    echo(figure(f"{label} comparison wall time", anyio.current_time() - started, "s"))
    return good


async def main_async(
    quick: bool,
    mode: str,
    workdir: Path,
    readmodel_projector: str = "external",
    metrics: str = "off",
    tracing: str = "off",
    trace_ratio: float = 1.0,
    pairs: int = 0,
) -> bool:
    good = True
    pairs = pairs or (COMPARE_PAIRS_QUICK if quick else COMPARE_PAIRS)
    if mode == "overhead":
        return await compare_metrics(
            OVERHEAD_QUICK if quick else OVERHEAD,
            workdir,
            readmodel_projector,
            pairs,
            tracing=True,
            metrics=True,
            trace_ratio=trace_ratio,
            warmup=True,
        )
    if mode == "budget":
        sizes = BUDGET_QUICK if quick else BUDGET
        print("-- budget: every join accepted (stock = attempts), CPU per reply by process")
        await anyio.Path(workdir / "budget").mkdir()
        result = await crowd(sizes, workdir / "budget", readmodel_projector=readmodel_projector)
        return report_crowd(result, sizes)
    if mode in ("crowd", "both"):
        sizes = CROWD_QUICK if quick else CROWD
        print("-- crowd: joins to one hot window, then the same load on a no-op responder")
        await anyio.Path(workdir / "crowd").mkdir()
        result = await crowd(
            sizes,
            workdir / "crowd",
            readmodel_projector=readmodel_projector,
            metrics=metrics == "on",
            tracing=tracing == "on",
            trace_ratio=trace_ratio,
        )
        good &= report_crowd(result, sizes)
        if metrics == "compare":
            good &= await compare_metrics(sizes, workdir, readmodel_projector, pairs)
        if tracing == "compare":
            good &= await compare_metrics(
                sizes,
                workdir,
                readmodel_projector,
                pairs,
                tracing=True,
                metrics=metrics == "on",
                trace_ratio=trace_ratio,
            )
    if mode in ("crash", "both"):
        sizes = CRASH_QUICK if quick else CRASH
        print("-- crash: SIGKILL the node mid-crowd, restart it, look for every acknowledged join")
        await anyio.Path(workdir / "crash").mkdir()
        crashed = await crash(sizes, workdir / "crash", readmodel_projector=readmodel_projector)
        good &= report_crash(crashed, sizes)
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flash_crowd")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--mode", choices=("crowd", "crash", "both", "budget", "overhead"), default="both"
    )
    parser.add_argument(
        "--projector",
        choices=("external", "node"),
        default="external",
        help="where the read model's projector runs (default: its own process)",
    )
    parser.add_argument(
        "--metrics",
        choices=("off", "on", "compare"),
        default="off",
        help="the node's /metrics endpoint, scraped every second; compare: off, then on",
    )
    parser.add_argument(
        "--tracing",
        choices=("off", "on", "compare"),
        default="off",
        help="the node's spans exported over OTLP to a stand-in collector; compare: "
        "nothing on, then tracing on (and metrics too with --metrics on)",
    )
    parser.add_argument(
        "--trace-ratio",
        type=float,
        default=Settings().trace_sample_ratio,
        metavar="R",
        help="the node's trace_sample_ratio with tracing on (default: the setting's "
        f"default, {Settings().trace_sample_ratio:g}; 1 traces every join)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        metavar="N",
        help="crowds of each side in a comparison (default: "
        f"{COMPARE_PAIRS}, {COMPARE_PAIRS_QUICK} with --quick)",
    )
    args = parser.parse_args(argv)
    if args.pairs < 0:
        parser.error("--pairs must be positive")
    configure_logging("warning")  # not a line per collector or scrape server started
    if not 0.0 <= args.trace_ratio <= 1.0:
        parser.error("--trace-ratio must be between 0 and 1")
    try:
        with tempfile.TemporaryDirectory(prefix="flash-crowd-") as tmp:
            good = anyio.run(
                main_async,
                args.quick,
                args.mode,
                Path(tmp),
                args.projector,
                args.metrics,
                args.tracing,
                args.trace_ratio,
                args.pairs,
            )
    except BenchError as exc:
        print(f"!! flash_crowd: {exc}", flush=True)
        return 1
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())

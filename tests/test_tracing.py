"""Traces: one join is one connected trace, from the client's request through the NATS
hop, the window's turns and the buyer check, to the commit and the published event.

Spans are recorded by the real OpenTelemetry SDK into its in-memory exporter, one at a
time as they end (``batch=False``). The integration test runs a node on a real
nats-server with its real SQLite files; the runtime tests use a memory journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actors import Actor, ActorSystem, OutboxEntry, PersistentActor, VirtualClock
from actors.journal import MemoryJournal
from actors.nats import Msg, NatsServer, NatsTransport
from actors.tracing import Forwarded, trace_id_of, unsampled
from bench import tracing_overhead as overhead
from bench._otlp_sink import OtlpSink
from bench.flash_crowd import Sizes, crowd, report_crowd
from iceshop.cli.client import request_headers
from iceshop.node import ShopNode
from iceshop.observability.tracing import (
    OtelTracer,
    parse_traceparent,
    request_span,
    tracer_from_settings,
)
from iceshop.settings import Settings
from tests.shop_client import Client
from tests.window_support import node_window

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _tracer() -> tuple[OtelTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return OtelTracer.create(exporter, batch=False, node_id="t1"), exporter


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def _trace_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return _hex(ctx.trace_id, 32)


def _root_path(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    """Names from ``span`` up to the root of its trace, following parent ids."""
    by_id = {_span_id(s): s for s in spans}
    path = [span.name]
    parent = _parent_id(span)
    while parent is not None and parent in by_id:
        span = by_id[parent]
        path.append(span.name)
        parent = _parent_id(span)
    return path


# -- the traceparent header ---------------------------------------------------------------


def test_traceparent_parsing_follows_w3c() -> None:
    ctx = parse_traceparent(SAMPLED)
    assert ctx is not None and ctx.is_remote and ctx.trace_flags.sampled
    assert _hex(ctx.trace_id, 32) == TRACE_ID and _hex(ctx.span_id, 16) == "b7ad6b7169203331"
    unsampled = parse_traceparent(UNSAMPLED)
    assert unsampled is not None and not unsampled.trace_flags.sampled
    # a later version may append fields; version 00 may not
    assert parse_traceparent("01" + SAMPLED[2:] + "-extra") is not None
    for bad in (
        None,
        "",
        SAMPLED + "-extra",
        "ff" + SAMPLED[2:],
        SAMPLED.replace(TRACE_ID, "0" * 32),
        SAMPLED.replace("b7ad6b7169203331", "0" * 16),
        SAMPLED.replace("0af7", "0AF7"),  # lower-case hex only
        SAMPLED.replace("-", "_"),
        SAMPLED[:-1],
    ):
        assert parse_traceparent(bad) is None, bad
    assert trace_id_of(SAMPLED) == TRACE_ID
    assert trace_id_of("garbage") is None and trace_id_of(None) is None


def test_new_traces_are_sampled_at_the_ratio_and_children_follow_their_parent() -> None:
    exporter = InMemorySpanExporter()
    never = OtelTracer.create(exporter, sample_ratio=0.0, batch=False)
    assert never.start("route x", None) is None  # not sampled: no context at all
    assert never.start("route x", {"traceparent": "junk"}) is None
    with request_span(never, "iceshop.x") as headers:
        assert headers == {}
    # a sampled parent is followed whatever the ratio; an unsampled one is forwarded
    child = never.start("turn x", {"traceparent": SAMPLED})
    assert child is not None and trace_id_of(child.traceparent) == TRACE_ID
    child.end()
    forwarded = never.start("turn x", {"traceparent": UNSAMPLED})
    assert isinstance(forwarded, Forwarded) and forwarded.traceparent == UNSAMPLED
    assert never.start("commit", forwarded) is forwarded
    assert [s.name for s in exporter.get_finished_spans()] == ["turn x"]
    always = OtelTracer.create(exporter, sample_ratio=1.0, batch=False)
    with request_span(always, "iceshop.x", {"authorization": "Bearer t"}) as headers:
        assert headers["authorization"] == "Bearer t"
        ctx = parse_traceparent(headers["traceparent"])
        assert ctx is not None and ctx.trace_flags.sampled
    assert exporter.get_finished_spans()[-1].name == "nats request iceshop.x"
    half = OtelTracer.create(InMemorySpanExporter(), sample_ratio=0.5, batch=False)
    sampled = sum(half.start("r", None) is not None for _ in range(2000))
    assert 800 < sampled < 1200


def test_unsampled_is_a_string_test() -> None:
    assert unsampled(UNSAMPLED) and not unsampled(SAMPLED)
    assert not unsampled(UNSAMPLED + "-x") and not unsampled("01" + UNSAMPLED[2:])
    assert unsampled(UNSAMPLED[:-1] + "2")  # another flag, sampled bit clear


def test_settings_choose_the_exporter() -> None:
    assert tracer_from_settings(Settings()) is None  # "none": no tracer at all
    tracer = tracer_from_settings(Settings(trace_exporter="console"), "n1")
    assert isinstance(tracer, OtelTracer)
    tracer.shutdown()
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"trace_sample_ratio": 1.5}, Settings)


# -- the runtime's hooks ------------------------------------------------------------------------


class Stored(msgspec.Struct, tag=True, frozen=True):
    value: int


class _Store(PersistentActor):
    """Persists and emits an event per message; asks its helper first when told to."""

    event_type = Stored

    def __init__(self) -> None:
        self.total = 0

    def apply(self, event: Any) -> None:
        self.total += event.value

    def receive(self, message: Any) -> Any:
        if message == "ask-helper":
            self.request(self.system.ref("helper", "h"), "check", lambda answer: ("checked", 1))
            return "asked"
        value = message[1] if isinstance(message, tuple) else message
        self.persist(Stored(value))
        self.emit(f"stored.{self.key}", b"x", id=f"{self.key}.{self.seq}")
        return self.total


class _Helper(Actor):
    def receive(self, message: Any) -> Any:
        return "ok"


class _Sink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


async def _system(tracer: OtelTracer | None, sink: _Sink) -> ActorSystem:
    system = ActorSystem(
        clock=VirtualClock(), journal=MemoryJournal(), outbox_sink=sink, tracer=tracer
    )
    system.register("store", _Store)
    system.register("helper", _Helper)
    return system


@pytest.mark.anyio
async def test_a_traced_message_gets_turn_commit_and_publish_spans() -> None:
    tracer, exporter = _tracer()
    sink = _Sink()
    async with await _system(tracer, sink) as system:
        ref = system.ref("store", "s1")
        assert await ref.ask(5, headers={"traceparent": SAMPLED}) == 5
        assert await ref.ask(1) == 6  # no context: no span
        await system.drain()
    spans = exporter.get_finished_spans()
    names = _by_name(spans)
    assert sorted(names) == ["commit", "publish event", "turn store"]
    (turn,) = names["turn store"]
    (commit,) = names["commit"]
    (publish,) = names["publish event"]
    assert {_trace_id(s) for s in spans} == {TRACE_ID}
    assert _parent_id(turn) == int("b7ad6b7169203331", 16)
    assert _parent_id(commit) == _span_id(turn)
    assert _parent_id(publish) == _span_id(turn)
    assert turn.attributes is not None and turn.attributes["actor.key"] == "s1"
    assert turn.attributes["message.type"] == "int"
    assert commit.attributes is not None
    batch_size = commit.attributes["journal.batch_size"]
    assert isinstance(batch_size, int) and batch_size >= 1
    assert publish.kind == SpanKind.PRODUCER
    # the published entry names the publish span; the untraced one carries nothing
    traced, untraced = sink.entries
    ctx = parse_traceparent(traced.headers["traceparent"])
    assert ctx is not None and ctx.span_id == _span_id(publish)
    assert "traceparent" not in untraced.headers


@pytest.mark.anyio
async def test_an_ask_between_actors_and_its_answer_stay_in_the_trace() -> None:
    tracer, exporter = _tracer()
    sink = _Sink()
    async with await _system(tracer, sink) as system:
        ref = system.ref("store", "s1")
        assert await ref.ask("ask-helper", headers={"traceparent": SAMPLED}) == "asked"
        await system.drain()  # the helper answers; the answer is stored and emitted
    spans = exporter.get_finished_spans()
    names = _by_name(spans)
    assert {_trace_id(s) for s in spans} == {TRACE_ID}
    first, answer = sorted(names["turn store"], key=lambda s: s.start_time or 0)
    (helper,) = names["turn helper"]
    assert _parent_id(helper) == _span_id(first)
    assert _parent_id(answer) == _span_id(first)
    assert answer.attributes is not None and answer.attributes["message.type"] == "tuple"
    (commit,) = names["commit"]
    assert _parent_id(commit) == _span_id(answer)
    assert len(sink.entries) == 1 and "traceparent" in sink.entries[0].headers


@pytest.mark.anyio
async def test_an_unsampled_context_records_nothing_and_is_forwarded() -> None:
    tracer, exporter = _tracer()
    sink = _Sink()
    async with await _system(tracer, sink) as system:
        assert await system.ref("store", "s1").ask(2, headers={"traceparent": UNSAMPLED}) == 2
        await system.drain()
    assert exporter.get_finished_spans() == ()
    (entry,) = sink.entries
    assert entry.headers["traceparent"] == UNSAMPLED  # downstream knows: not sampled


@pytest.mark.anyio
async def test_without_a_tracer_nothing_is_added() -> None:
    sink = _Sink()
    async with await _system(None, sink) as system:
        assert await system.ref("store", "s1").ask(2, headers={"traceparent": SAMPLED}) == 2
        await system.drain()
    (entry,) = sink.entries
    assert entry.headers == {}


@pytest.mark.anyio
async def test_a_failing_handler_marks_its_span() -> None:
    class _Boom(Actor):
        max_failures = 1

        def receive(self, message: Any) -> Any:
            raise RuntimeError("boom")

    tracer, exporter = _tracer()
    async with ActorSystem(clock=VirtualClock(), tracer=tracer) as system:
        system.register("boom", _Boom)
        with pytest.raises(Exception, match="boom"):
            await system.ref("boom", "b").ask("x", headers={"traceparent": SAMPLED})
    (span,) = exporter.get_finished_spans()
    assert span.name == "turn boom" and span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"


# -- one join over NATS ------------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as nats:
        yield nats


def _node_settings(server: NatsServer, tmp_path: Path) -> Settings:
    """A node on ``server`` whose campaign stays quiet (no proposals in the traces)."""
    return Settings(
        nats_url=server.url,
        data_dir=str(tmp_path / "node"),
        node_id="n1",
        auth="off",
        campaign_interval_s=3600.0,
    )


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_join_is_one_connected_trace_across_the_nats_hop(
    server: NatsServer, tmp_path: Path
) -> None:
    tracer, exporter = _tracer()
    async with (
        ShopNode(_node_settings(server, tmp_path), tracer=tracer) as node,
        NatsTransport(server.url) as t,
    ):
        c = Client(t)
        await c.ok("buyers.B1.register", {"name": "B1", "phone": "+905551112233"})
        assert node.system is not None
        now = node.clock.time()
        await node.system.ref("window", "W1").ask(
            node_window(now),
            timeout=5.0,
        )
        events: list[Msg] = []
        got_event = anyio.Event()

        async def on_event(msg: Msg) -> None:
            events.append(msg)
            got_event.set()

        await t.subscribe("iceshop.events.window.W1.joined", on_event)
        await t.flush()
        # As if B1 had registered through another node: the window asks the buyer actor,
        # and that ask must carry the trace too.
        node.known_buyers._ids.discard("B1")
        # The activation fires on its own timer; had it shared a turn with the join, its
        # commit would be a second commit of the join's trace.
        with anyio.fail_after(5):
            while (await c.call("windows.W1.get"))["data"]["state"] != "active":
                await anyio.sleep(0.01)
        exporter.clear()

        subject = "iceshop.windows.W1.join"
        with request_span(tracer, subject) as headers:
            reply = await c.call(
                "windows.W1.join", {"join_id": "J1", "buyer_id": "B1"}, headers=headers
            )
        assert reply["ok"] is True, reply
        with anyio.fail_after(5):
            await got_event.wait()
        # a request without a context starts a trace at the node (ratio 1: always)
        assert (await c.call("windows.W1.get"))["ok"] is True

    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == f"nats request {subject}"]
    trace_id = _trace_id(request)
    mine = [s for s in spans if _trace_id(s) == trace_id]
    names = _by_name(mine)
    for name in ("route window", "turn window", "turn buyer", "commit", "publish event"):
        assert name in names, (name, sorted(names))
    # connected: every span of the trace leads up to the client's request span
    for span in mine:
        assert _root_path(span, mine)[-1] == request.name, _root_path(span, mine)
    (route,) = names["route window"]
    assert _parent_id(route) == _span_id(request) and route.kind == SpanKind.SERVER
    join_turn = next(
        s
        for s in names["turn window"]
        if s.attributes and s.attributes["message.type"] == "Request"
    )
    assert _parent_id(join_turn) == _span_id(route)
    (check,) = names["turn buyer"]
    assert _parent_id(check) == _span_id(join_turn)
    (publish,) = names["publish event"]
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == "iceshop.events.window.W1.joined"
    assert _root_path(publish, mine)[1:3] == ["turn window", "route window"]
    (commit,) = names["commit"]
    assert _root_path(commit, mine)[1:3] == ["turn window", "route window"]
    (get_route,) = [s for s in spans if s.name == "route window" and _trace_id(s) != trace_id]
    assert get_route.parent is None
    (get_turn,) = [s for s in spans if _parent_id(s) == _span_id(get_route)]
    assert get_turn.name == "turn window" and _trace_id(get_turn) == _trace_id(get_route)
    # the event on NATS continues the trace from its publish span
    (event,) = events
    assert event.headers is not None
    ctx = parse_traceparent(event.headers.get("traceparent"))
    assert ctx is not None and _hex(ctx.trace_id, 32) == trace_id
    assert ctx.span_id == _span_id(publish)


async def _spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called ``name``, once there is one (they end asynchronously)."""
    with anyio.fail_after(10):
        while True:
            found = [s for s in exporter.get_finished_spans() if s.name == name]
            if found:
                return found
            await anyio.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.integration
async def test_the_projector_and_the_demand_subscription_continue_the_events_trace(
    server: NatsServer, tmp_path: Path
) -> None:
    tracer, exporter = _tracer()
    async with (
        ShopNode(_node_settings(server, tmp_path), tracer=tracer) as node,
        NatsTransport(server.url) as t,
    ):
        assert node.system is not None
        now = node.clock.time()
        exporter.clear()
        # The window's creation, traced: its "created" event carries the trace on.
        created = await node.system.ref("window", "W1").ask(
            node_window(now, activates_in=600.0, expires_in=1200.0),
            headers={"traceparent": SAMPLED},
            timeout=5.0,
        )
        assert created.window_id == "W1"
        (projected,) = await _spans_named(exporter, "project event")
        # A demand event published with a trace context, as the product's outbox does.
        event = {
            "event_id": "demand.P9.1",
            "type": "updated",
            "at": "2027-01-15T08:00:00.000Z",
            "seq": 1,
            "data": {"product_id": "P9", "score": 1.0, "open_intents": 1, "quantity": 1},
        }
        await t.client.publish(
            "iceshop.events.demand.P9.updated",
            msgspec.json.encode(event),
            headers={"traceparent": SAMPLED},
        )
        (demand,) = await _spans_named(exporter, "demand signal")
        turns = await _spans_named(exporter, "turn campaign")
        # An event without a context starts no trace at either place.
        before = len(exporter.get_finished_spans())
        campaign = node.system.kind("campaign")
        handled = campaign.handled
        await t.client.publish(
            "iceshop.events.demand.P9.updated",
            msgspec.json.encode({**event, "event_id": "demand.P9.2", "seq": 2}),
        )
        with anyio.fail_after(10):
            while campaign.handled == handled:  # the signal reached the campaign
                await anyio.sleep(0.01)

    spans = exporter.get_finished_spans()
    (publish,) = [
        s
        for s in spans
        if s.name == "publish event"
        and s.attributes
        and s.attributes["messaging.destination.name"] == "iceshop.events.window.W1.created"
    ]
    assert _trace_id(projected) == TRACE_ID
    assert _parent_id(projected) == _span_id(publish)  # the event's traceparent
    assert projected.kind == SpanKind.CONSUMER
    assert projected.attributes is not None
    assert projected.attributes["messaging.destination.name"] == "iceshop.events.window.W1.created"
    assert projected.status.status_code != StatusCode.ERROR
    assert _trace_id(demand) == TRACE_ID and demand.kind == SpanKind.CONSUMER
    assert _hex(_parent_id(demand) or 0, 16) == SAMPLED.split("-")[2]
    (signal_turn,) = [s for s in turns if _parent_id(s) == _span_id(demand)]
    assert _trace_id(signal_turn) == TRACE_ID
    assert not [s for s in spans[before:] if s.name in ("demand signal", "project event")], (
        "an event without a traceparent started a trace"
    )


def test_the_cli_sends_the_callers_trace_context() -> None:
    assert request_headers(None, None) is None
    assert request_headers(None, "  ") is None
    assert request_headers("tok", f" {SAMPLED}\n") == {
        "Authorization": "Bearer tok",
        "traceparent": SAMPLED,
    }


# -- export over OTLP, and the benchmarks' tracing parts -------------------------------------------


@pytest.mark.anyio
async def test_otlp_export_reaches_a_collector() -> None:
    async with OtlpSink() as sink:
        settings = Settings(
            trace_exporter="otlp", trace_endpoint=sink.endpoint, trace_sample_ratio=1.0
        )
        tracer = tracer_from_settings(settings, "n1")
        assert tracer is not None
        root = tracer.start("route x", None)
        assert root is not None
        child = tracer.start("turn x", {"traceparent": root.traceparent})
        assert child is not None
        child.end()
        root.end()
        # the export is a blocking HTTP post in the processor's thread; this loop serves it
        await anyio.to_thread.run_sync(tracer.shutdown)
    assert sink.requests >= 1 and sink.spans == 2 and sink.refused == 0


def test_tracing_overhead_benchmark_runs_every_side() -> None:
    for side in overhead.SIDES:
        assert anyio.run(overhead.joins, 300, 50, side, backend="asyncio") > 0
    assert anyio.run(overhead.log_lines, 10, backend="asyncio") >= 0


@pytest.mark.anyio
@pytest.mark.integration
async def test_flash_crowd_with_tracing_exports_from_a_node_process(tmp_path: Path) -> None:
    """``--tracing on``: the node process (ICESHOP_TRACE_*) exports its spans over OTLP,
    the last of them when it stops."""
    sizes = Sizes(attempts=100, stock=20, concurrency=20, timeout_s=5.0)
    lines: list[str] = []
    result = await crowd(
        sizes, tmp_path, ceiling=False, tracing=True, trace_ratio=1.0, echo=lines.append
    )
    assert result.load.ok == 20 and result.consistent
    # every join at least: route, its turn, the buyer check and its answer
    assert result.trace_spans is not None and result.trace_spans >= 4 * sizes.attempts
    assert report_crowd(result, sizes, echo=lines.append)
    assert f"spans exported to the collector: {result.trace_spans:,} spans" in lines

"""Logs: a line written inside an actor's turn carries the turn's context (node, kind,
key, message type, trace id) without the handler passing it; lines are JSON when not on
a terminal; writing never blocks the caller, and a full queue drops and says so."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from actors import Actor, ActorSystem, VirtualClock
from actors.current import current_turn
from actors.nats import NatsServer
from iceshop.node import ShopNode
from iceshop.observability import logs
from iceshop.observability.tracing import OtelTracer
from iceshop.settings import Settings
from tests.window_support import node_window

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

log = structlog.get_logger("tests.logging")


class _Chatty(Actor):
    def receive(self, message: Any) -> Any:
        log.info("handled", value=message)
        log.warning("explicit", kind="mine")  # the call's own fields win
        return message


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    yield
    logs.shutdown()
    structlog.reset_defaults()


CONTEXT = [structlog.contextvars.merge_contextvars, logs.add_turn_context]


@pytest.mark.anyio
async def test_a_line_in_a_turn_carries_the_turn_context() -> None:
    with capture_logs(processors=CONTEXT) as captured:
        async with ActorSystem(clock=VirtualClock(), node_id="n7") as system:
            system.register("chatty", _Chatty)
            assert await system.ref("chatty", "c1").ask(3, headers={"traceparent": SAMPLED}) == 3
            assert await system.ref("chatty", "c2").ask("x") == "x"
            log.info("outside")
    handled = [e for e in captured if e["event"] == "handled"]
    assert handled[0] == {
        "event": "handled",
        "value": 3,
        "log_level": "info",
        "node": "n7",
        "kind": "chatty",
        "key": "c1",
        "message_type": "int",
        "trace_id": TRACE_ID,
    }
    assert handled[1]["key"] == "c2" and handled[1]["message_type"] == "str"
    assert "trace_id" not in handled[1]  # no context, no trace id
    explicit = next(e for e in captured if e["event"] == "explicit")
    assert explicit["kind"] == "mine" and explicit["key"] == "c1"
    (outside,) = [e for e in captured if e["event"] == "outside"]
    assert "kind" not in outside and "key" not in outside
    assert current_turn() is None


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_node_binds_its_id_and_a_traced_turn_its_trace(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer = OtelTracer.create(InMemorySpanExporter(), batch=False)
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n9",
            auth="off",
            campaign_interval_s=3600.0,
        )
        with capture_logs(processors=CONTEXT) as captured:
            async with ShopNode(settings, tracer=tracer) as node:
                assert node.system is not None
                now = node.clock.time()
                refused = await node.system.ref("window", "W1").ask(
                    # expires before it activates: refused, with a warning
                    node_window(now, activates_in=10.0, expires_in=5.0),
                    headers={"traceparent": SAMPLED},
                )
                assert refused.code.value == "invalid_request"
    (line,) = [e for e in captured if e["event"] == "window not created"]
    assert line["node"] == "n9"
    assert (line["kind"], line["key"]) == ("window", "W1")
    assert line["message_type"] == "CreateWindow"
    assert line["trace_id"] == TRACE_ID  # the turn's span is in the request's trace
    ready = next(e for e in captured if e["event"] == "node ready")
    assert ready["node"] == "n9" and "kind" not in ready


def test_json_lines_when_not_on_a_terminal(restore_structlog: None) -> None:
    out = io.StringIO()
    logs.configure("info", "auto", stream=out)
    structlog.get_logger("t").info("hello", n=1)
    structlog.get_logger("t").debug("hidden")
    logs.shutdown()
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "hello" and record["n"] == 1 and record["level"] == "info"
    assert record["timestamp"].endswith("Z")


class _Library(Actor):
    """Logs through structlog and, as a third-party library would, the standard library."""

    def receive(self, message: Any) -> Any:
        log.info("in a turn", value=message)
        logging.getLogger("some.library").warning("library says %s", message)
        return message


@pytest.mark.anyio
async def test_the_production_chain_writes_the_turn_context_as_json(
    restore_structlog: None,
) -> None:
    """Through ``configure()`` itself (not a test processor list): a structlog line and a
    standard-library line written inside a turn are JSON with the turn's context."""
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    async with ActorSystem(clock=VirtualClock(), node_id="n7") as system:
        system.register("lib", _Library)
        assert await system.ref("lib", "k1").ask(5, headers={"traceparent": SAMPLED}) == 5
    logging.getLogger("some.library").info("outside any turn")
    logging.getLogger("some.library").debug("below the level")
    logs.shutdown()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    context = {
        "node": "n7",
        "kind": "lib",
        "key": "k1",
        "message_type": "int",
        "trace_id": TRACE_ID,
    }
    (turn,) = [r for r in records if r["event"] == "in a turn"]
    assert turn.items() >= {**context, "value": 5, "level": "info"}.items()
    (library,) = [r for r in records if r["event"] == "library says 5"]
    assert library.items() >= {**context, "level": "warning", "logger": "some.library"}.items()
    assert library["timestamp"].endswith("Z")
    (outside,) = [r for r in records if r["event"] == "outside any turn"]
    assert "kind" not in outside and outside["logger"] == "some.library"
    assert not [r for r in records if r["event"] == "below the level"]
    # shutdown: library records are no longer routed into the (closed) writer
    assert not [h for h in logging.getLogger().handlers if isinstance(h, logs.QueueHandler)]


def test_a_library_exception_is_one_json_line(restore_structlog: None) -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("some.library").exception("it failed")
    logs.shutdown()
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "it failed" and record["level"] == "error"
    assert "ValueError: boom" in record["exception"]


def test_to_file_writes_through_the_queue_and_restores(tmp_path: Path) -> None:
    before = structlog.get_config()
    path = tmp_path / "node.log"
    with logs.to_file(path) as writer:
        assert isinstance(writer, logs.LogWriter)
        structlog.get_logger("t").info("to the file", n=1)
        logging.getLogger("some.library").warning("library to the file")
    assert structlog.get_config() == before
    assert not [h for h in logging.getLogger().handlers if isinstance(h, logs.QueueHandler)]
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["to the file", "library to the file"]


def test_readable_lines_on_a_terminal() -> None:
    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    (console,) = logs.renderers_for("auto", _Tty())
    assert isinstance(console, structlog.dev.ConsoleRenderer)
    *_, last = logs.renderers_for("auto", io.StringIO())
    assert isinstance(last, structlog.processors.JSONRenderer)
    *_, forced = logs.renderers_for("json", _Tty())
    assert isinstance(forced, structlog.processors.JSONRenderer)


class _BlockedStream(io.StringIO):
    """A stream whose first write blocks until released (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(10)
        return super().write(text)


def test_a_blocked_stream_never_blocks_the_caller_and_a_full_queue_drops() -> None:
    stream = _BlockedStream()
    writer = logs.LogWriter(stream, capacity=10)
    writer.start()
    writer.write("first")
    assert stream.entered.wait(5)  # the writer thread is stuck in write()
    for i in range(13):
        writer.write(f"line {i}")  # returns at once: queued, or dropped when full
    assert writer.dropped == 3
    stream.release.set()
    writer.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "first"
    assert lines[1:11] == [f"line {i}" for i in range(10)]
    assert lines[11] == "3 log lines dropped (the queue was full)"
    writer.write("after close")
    assert writer.dropped == 4

"""What tracing and structured logs cost the runtime, per message and per log line.

* **joins**: a persistent actor persists and emits one event per message (a join's
  shape: a turn, a group commit, an outbox publish), fed ``in_flight`` messages at a
  time through a memory journal and a sink that drops what it gets, every message
  carrying a ``traceparent``. Four sides, alternating per repeat, in one process:
  ``no tracer`` (the default: the runtime ignores the header), ``unsampled`` (a tracer,
  the header says "not sampled": spans are forwarded, nothing is recorded — what a
  ``trace_sample_ratio`` below 1 costs most requests), ``sampled`` (every message
  recorded by the OpenTelemetry SDK: a turn, a commit and a publish span, exported in
  batches by a thread to an exporter that drops them). Figures: messages per second of
  process CPU time (so other load on the machine weighs less), and the cost in
  microseconds per message against no tracer.
* **log line**: one ``log.info`` with two fields from inside a turn: structlog's
  ``PrintLogger`` writing to ``/dev/null`` as the node used to, against the node's
  configuration now (context processors, JSON, a bounded queue drained by a thread).

    python -m bench.tracing_overhead [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from actors import Actor, ActorSystem, OutboxEntry, PersistentActor, RealClock
from actors.journal import MemoryJournal
from bench._common import figure, median, ratio
from iceshop.observability import logs
from iceshop.observability.tracing import OtelTracer

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SIDES = ("no tracer", "unsampled", "sampled")
WAIT_S = 120.0


class Joined(msgspec.Struct, tag=True, frozen=True):
    n: int


class _Window(PersistentActor):
    event_type = Joined
    mailbox_capacity = 100_000

    def __init__(self) -> None:
        self.count = 0

    def apply(self, event: Any) -> None:
        self.count += 1

    def receive(self, message: Any) -> Any:
        self.persist(Joined(message))
        self.emit(f"events.w.{self.count}", b"{}", id=f"w.{self.count}")
        return self.count


class _DropSink:
    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        pass


class _DropExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def joins(messages: int, in_flight: int, side: str) -> float:
    """Process CPU seconds for ``messages`` traced messages on ``side``."""
    tracer = None
    if side != "no tracer":
        tracer = OtelTracer.create(_DropExporter(), sample_ratio=1.0)
    headers = {"traceparent": UNSAMPLED if side == "unsampled" else SAMPLED}
    system = ActorSystem(
        clock=RealClock(), journal=MemoryJournal(), outbox_sink=_DropSink(), tracer=tracer
    )
    async with system:
        system.register("window", _Window)
        ref = system.ref("window", "w")
        await ref.ask(0)
        done = anyio.Event()
        sent = 0
        answered = 0

        def reply(value: Any) -> None:
            nonlocal answered, sent
            answered += 1
            if sent < messages:
                sent += 1
                ref.tell(sent, reply_to=reply, headers=headers)
            elif answered == messages:
                done.set()

        start = time.process_time()
        for _ in range(min(in_flight, messages)):
            sent += 1
            ref.tell(sent, reply_to=reply, headers=headers)
        with anyio.fail_after(WAIT_S):
            await done.wait()
        await system.drain()
        elapsed = time.process_time() - start
    if tracer is not None:
        await anyio.to_thread.run_sync(tracer.shutdown)
    return elapsed


class _Logger(Actor):
    log = structlog.get_logger("bench")

    def receive(self, message: Any) -> Any:
        (lines,) = message
        log = self.log
        start = time.perf_counter()
        for i in range(lines):
            log.info("join decided", join_id="J1", n=i)
        return time.perf_counter() - start


async def log_lines(lines: int) -> float:
    async with ActorSystem(clock=RealClock(), node_id="bench") as system:
        system.register("logger", _Logger)
        seconds: float = await system.ref("logger", "l").ask((lines,), timeout=WAIT_S)
        return seconds


def _configure_print_logger(devnull: io.TextIOWrapper) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(devnull),
        cache_logger_on_first_use=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_overhead", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per side (default 5, quick 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    messages = 5_000 if args.quick else 50_000
    in_flight = 200
    print(f"repeats per side: {repeats}; figures are medians")

    print(f"-- joins ({messages:,} messages, {in_flight} in flight; persist + emit each)")
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(repeats):
        order = SIDES if i % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            samples[side].append(anyio.run(joins, messages, in_flight, side, backend="asyncio"))
    cpu = {side: median(samples[side]) for side in SIDES}
    for side in SIDES:
        print(figure(f"joins, {side}", messages / cpu[side], "msgs per CPU second"))
    for side in SIDES[1:]:
        extra = (cpu[side] - cpu["no tracer"]) / messages * 1e6
        print(figure(f"tracing cost, {side}", extra, "us per message"))
        print(
            ratio(
                f"joins {side} vs no tracer",
                messages / cpu[side],
                messages / cpu["no tracer"],
                "no tracer",
            )
        )

    lines = 2_000 if args.quick else 20_000
    print(f"-- log lines ({lines:,} from inside a turn)")
    old: list[float] = []
    new: list[float] = []
    with open(os.devnull, "w") as devnull:
        try:
            for _ in range(repeats):
                _configure_print_logger(devnull)
                old.append(anyio.run(log_lines, lines, backend="asyncio"))
                logs.configure("info", "json", stream=devnull)
                new.append(anyio.run(log_lines, lines, backend="asyncio"))
        finally:
            logs.shutdown()
            structlog.reset_defaults()
    print(figure("log line, PrintLogger to /dev/null", median(old) / lines * 1e6, "us"))
    print(figure("log line, context + JSON + queue", median(new) / lines * 1e6, "us"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OpenTelemetry traces of a node: the runtime's tracing hooks, recorded by the OTel SDK.

The runtime (``actors.tracing``) says where spans begin and end and carries the W3C
``traceparent`` across every NATS hop and actor turn; this module records them with the
OpenTelemetry SDK and exports them. One join is then ONE trace::

    nats request iceshop.windows.W1.join          (the client, when it traces)
    └─ route window                                (the node: request in .. reply queued)
       └─ turn window          (Join)              (the window's handler; the join waits)
          ├─ turn buyer        (CheckBuyer)        (the window asks the buyer)
          ├─ turn window       (BuyerChecked)      (the answer; the join is decided)
          ├─ commit                                (the group commit that made it durable)
          └─ publish event                         (the outbox: window.W1.joined, its
                                                    NATS headers carry the trace on)

Each node has a ``TracerProvider`` of its own (never the process-wide one: tests run
several nodes in a process). Sampling is parent-based: a request whose ``traceparent``
says "sampled" is traced, one that says "not sampled" is not (the runtime forwards its
header without calling the tracer), and a request without one starts a trace with
probability ``trace_sample_ratio``, decided here before the SDK is involved; a new trace
that is not sampled carries no context at all, so it costs the node nothing further.
Sampled spans go to a ``BatchSpanProcessor``: ending one appends
it to a bounded deque (the oldest are dropped when the exporter falls behind), and the
export — console or OTLP over HTTP — runs in the processor's thread, never in the event
loop.

``trace_exporter = "none"`` (the default) makes no tracer at all: the runtime then pays
one ``is None`` test where a span would start, and this module (and OpenTelemetry) is
not even imported by the node.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator, Mapping
from typing import Final

import anyio
import anyio.to_thread
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from actors.tracing import (
    TRACEPARENT,
    TRACESTATE,
    AttributeValue,
    Forwarded,
    Parent,
    Role,
    unsampled,
)
from iceshop.settings import Settings
from iceshop.wire import ShopError

__all__ = [
    "DEFAULT_OTLP_ENDPOINT",
    "OtelSpan",
    "OtelTracer",
    "format_traceparent",
    "open_tracer",
    "parse_traceparent",
    "request_span",
    "tracer_from_settings",
]

DEFAULT_OTLP_ENDPOINT: Final = "http://127.0.0.1:4318/v1/traces"
"""Where ``trace_exporter = "otlp"`` sends spans when ``trace_endpoint`` is empty (an
OpenTelemetry Collector's OTLP/HTTP receiver on this host)."""

_ROLES: Final = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_HEX: Final = frozenset("0123456789abcdef")
_INVALID_TRACE: Final = "0" * 32
_INVALID_SPAN: Final = "0" * 16


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` header names, or ``None`` when it is
    missing or malformed (W3C trace context: ``00-<32 hex>-<16 hex>-<2 hex>``; a later
    version may append fields)."""
    if value is None:
        return None
    value = value.strip()
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[:2]
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if (
        not _HEX.issuperset(version + trace_id + span_id + flags)
        or version == "ff"
        or (version == "00" and len(value) != 55)
        or (len(value) > 55 and value[55] != "-")
        or trace_id == _INVALID_TRACE
        or span_id == _INVALID_SPAN
    ):
        return None
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16) & TraceFlags.SAMPLED),
    )


#: The parent context of a root span (not OpenTelemetry's "current span" of this task).
_NO_CONTEXT: Final = Context()


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class OtelSpan:
    """A recording span, as the runtime's :class:`actors.tracing.Span`."""

    __slots__ = ("_traceparent", "span")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self._traceparent: str | None = None

    @property
    def traceparent(self) -> str:
        value = self._traceparent
        if value is None:
            value = self._traceparent = format_traceparent(self.span.get_span_context())
        return value

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.span.set_attribute("error.type", type(error).__name__)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.span.end()


class OtelTracer:
    """The runtime's :class:`actors.tracing.Tracer` on an OpenTelemetry
    ``TracerProvider`` (see the module docstring)."""

    def __init__(self, provider: TracerProvider, sample_ratio: float = 1.0) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError("sample_ratio must be between 0 and 1")
        self.provider = provider
        #: The share of new traces (spans without a parent) that are recorded.
        self.sample_ratio = sample_ratio
        self._tracer = provider.get_tracer("iceshop")
        self._random = random.Random()

    @classmethod
    def create(
        cls,
        exporter: SpanExporter,
        *,
        sample_ratio: float = 1.0,
        node_id: str = "",
        batch: bool = True,
    ) -> OtelTracer:
        """A tracer exporting to ``exporter``: in batches from a thread of its own, or
        with ``batch=False`` one span at a time as it ends (tests, with an in-memory
        exporter)."""
        attributes: dict[str, str] = {"service.name": "iceshop"}
        if node_id:
            attributes["service.instance.id"] = node_id
        # Parent-based: a child follows its parent's decision. Roots are decided in
        # start() before the SDK sees them, so an unsampled request costs next to nothing.
        provider = TracerProvider(
            resource=Resource.create(attributes), sampler=ParentBased(ALWAYS_ON)
        )
        if batch:
            processor: BatchSpanProcessor | SimpleSpanProcessor = BatchSpanProcessor(
                exporter,
                max_queue_size=16_384,
                max_export_batch_size=512,
                schedule_delay_millis=1000,
            )
        else:
            processor = SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider, sample_ratio)

    def start(
        self,
        name: str,
        parent: Parent,
        attributes: Mapping[str, AttributeValue] | None = None,
        role: Role = "internal",
    ) -> OtelSpan | Forwarded | None:
        if type(parent) is Forwarded:
            return parent
        if type(parent) is OtelSpan:
            context = trace.set_span_in_context(parent.span)
        elif parent is None:
            return self._root(name, attributes, role)
        elif type(parent) is dict or isinstance(parent, Mapping):  # dict: skip the ABC check
            header = parent.get(TRACEPARENT)
            if header is None:  # the common case: a request that comes without a context
                return self._root(name, attributes, role)
            if unsampled(header):
                return Forwarded(header)  # the common case when sampling upstream
            remote = parse_traceparent(header)
            if remote is None:  # no (valid) context: this span starts a trace
                return self._root(name, attributes, role)
            if not remote.trace_flags.sampled:
                assert header is not None
                return Forwarded(header.strip())
            state = parent.get(TRACESTATE)
            if state:
                remote = SpanContext(
                    remote.trace_id,
                    remote.span_id,
                    True,
                    remote.trace_flags,
                    TraceState.from_header([state]),
                )
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        else:
            raise TypeError(f"not a parent of a span: {parent!r}")
        span = self._tracer.start_span(
            name, context, _ROLES[role], attributes=dict(attributes) if attributes else None
        )
        if not span.is_recording():
            return Forwarded(format_traceparent(span.get_span_context()))
        return OtelSpan(span)

    def _root(
        self, name: str, attributes: Mapping[str, AttributeValue] | None, role: Role
    ) -> OtelSpan | None:
        """A new trace, recorded with probability ``sample_ratio``; ``None`` otherwise
        (then nothing downstream carries a context: an unsampled request costs the
        node nothing more)."""
        ratio = self.sample_ratio
        if ratio < 1.0 and (ratio <= 0.0 or self._random.random() >= ratio):
            return None
        span = self._tracer.start_span(
            name, _NO_CONTEXT, _ROLES[role], attributes=dict(attributes) if attributes else None
        )
        return OtelSpan(span)

    def force_flush(self) -> None:
        """Export every ended span now (blocking: a thread, or a test)."""
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call it from a thread)."""
        self.provider.shutdown()


def _exporter(settings: Settings) -> SpanExporter:
    if settings.trace_exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ShopError.invalid(
            "trace_exporter: 'otlp' needs the package opentelemetry-exporter-otlp-proto-http",
            field="trace_exporter",
        ) from exc
    return OTLPSpanExporter(endpoint=settings.trace_endpoint or DEFAULT_OTLP_ENDPOINT)


def tracer_from_settings(settings: Settings, node_id: str = "") -> OtelTracer | None:
    """The node's tracer as its settings ask (``None`` for ``trace_exporter = "none"``)."""
    if settings.trace_exporter == "none":
        return None
    return OtelTracer.create(
        _exporter(settings), sample_ratio=settings.trace_sample_ratio, node_id=node_id
    )


@contextlib.contextmanager
def request_span(
    tracer: OtelTracer, subject: str, headers: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The client side of a request: ``with request_span(tracer, subject) as headers:``
    send the request with ``headers`` (a copy of the given ones plus the
    ``traceparent`` of a ``nats request <subject>`` span, which ends with the block)."""
    span = tracer.start(
        f"nats request {subject}", None, {"messaging.destination.name": subject}, "client"
    )
    out = dict(headers) if headers else {}
    if span is None:  # not sampled
        yield out
        return
    out[TRACEPARENT] = span.traceparent
    try:
        yield out
    except BaseException as exc:
        span.end(exc)
        raise
    span.end()


async def open_tracer(
    stack: contextlib.AsyncExitStack, settings: Settings, node_id: str = ""
) -> OtelTracer | None:
    """:func:`tracer_from_settings`, shut down (its last spans flushed) when ``stack``
    unwinds."""
    tracer = tracer_from_settings(settings, node_id)
    if tracer is not None:
        stack.push_async_callback(_shutdown, tracer)
    return tracer


SHUTDOWN_TIMEOUT_S: Final = 5.0
"""How long a node's exit waits for its last spans to be exported."""


async def _shutdown(tracer: OtelTracer) -> None:
    # The export may block on a collector that is gone: in a thread, and given up on
    # (the thread is left to finish alone) after a while.
    with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT_S):
        await anyio.to_thread.run_sync(tracer.shutdown, abandon_on_cancel=True)

"""Tracing hooks: where the runtime reports spans, without depending on a tracing library.

The runtime knows *where* the work of a request happens — the request arriving over NATS
(``route <kind>``), an actor handling it (``turn <kind>``), the group commit that made the
turn durable (``commit``), the outbox publishing the event it caused (``publish event``) —
but not how spans are recorded or exported. A :class:`Tracer` does that (an
OpenTelemetry one, say, supplied by the application); the runtime holds it as
``system.tracer`` and calls it only where a message that carries a trace context passes.
With no tracer — the default — each of those places costs one ``is None`` test.

**Context** travels as W3C trace-context headers (``traceparent``, ``tracestate``, lower
case as the NATS binding delivers them) on envelopes, asks between actors and outbox
entries, and as a :class:`Span` inside the process. The runtime never parses them: it
hands the header map or the parent span to :meth:`Tracer.start`, and takes
:attr:`Span.traceparent` to put in the headers of what the traced work sends on.

**Turns.** A turn handles a batch of messages that may belong to as many traces. Each
message that carries a context gets a ``turn <kind>`` span of its own, a child of that
message's context (not one span per turn with links): every request's trace then holds
its own handling, commit and event, connected by parent ids. While its handler runs, that
span is the *current span* (``actor.current_span``): events emitted and asks sent from the
handler carry it (the answer to an ask comes back in the same trace). The turn's commit
gets a ``commit`` span for each trace the turn worked in, a child of that trace's first
span in the turn, from the moment the turn is staged to the moment its group commit
lands. Work that waits (a reply taken with ``reply_later``) keeps ``current_span`` and
finishes inside ``actor.continue_trace(span)``, so it lands in its own trace.

**Unsampled contexts.** A ``traceparent`` whose flags say "not sampled" is not handed to
the tracer at all: the runtime wraps it in a :class:`Forwarded` span that records
nothing and passes the header on unchanged (what the W3C spec asks of a participant that
does not record), so a request nobody samples costs a string test and a small object
per hop. Only a tracer decides for requests that arrive without a context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "AttributeValue",
    "Forwarded",
    "Parent",
    "Role",
    "Span",
    "Tracer",
    "trace_id_of",
    "unsampled",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

AttributeValue = str | int | float | bool
Role = Literal["internal", "server", "client", "producer", "consumer"]
"""What a span is to its trace: ``server`` a request served (``route``), ``client`` a
request sent, ``producer`` a message published (``publish event``), ``consumer`` one
received, ``internal`` the rest (turns, commits)."""


class Span(Protocol):
    """One started span. The runtime ends every span it starts exactly once."""

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` header naming this span, for what it sends on."""
        ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def end(self, error: BaseException | None = None) -> None:
        """End the span; ``error``, when given, marks it failed."""
        ...


Parent = Span | Mapping[str, str] | None
"""A span's parent: a span of the same tracer, a header map holding ``traceparent`` (and
perhaps ``tracestate``), or ``None`` for the root of a new trace."""


class Tracer(Protocol):
    """Starts spans. Sampling is the tracer's business: a span under an unsampled parent
    is still a :class:`Span` (a :class:`Forwarded` one will do: it propagates the
    decision), and a new trace the sampler declines is ``None``."""

    def start(
        self,
        name: str,
        parent: Parent,
        attributes: Mapping[str, AttributeValue] | None = None,
        role: Role = "internal",
    ) -> Span | None:
        """A span under ``parent``; with no (valid) parent context, the root of a new
        trace, or ``None`` when that trace is not sampled: nothing downstream is then
        traced, and nothing carries a context."""
        ...


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a ``traceparent`` value, or ``None`` when it does
    not look like one (``00-<trace id>-<span id>-<flags>``)."""
    if traceparent is None or len(traceparent) < 55 or traceparent[2] != "-":
        return None
    return traceparent[3:35]


def unsampled(traceparent: str) -> bool:
    """Whether a well-formed version-00 ``traceparent`` says "not sampled" (its flags'
    low bit is clear); checked without parsing, as it runs at every hop."""
    return (
        len(traceparent) == 55
        and traceparent[52] == "-"
        and traceparent[53] == "0"
        and traceparent[54] in "02468ace"
        and traceparent.startswith("00-")
    )


class Forwarded:
    """A span that is not sampled: it records nothing and hands its ``traceparent`` on
    unchanged, so everything downstream knows the trace is not sampled."""

    __slots__ = ("traceparent",)

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def end(self, error: BaseException | None = None) -> None:
        pass

    def __repr__(self) -> str:
        return f"Forwarded({self.traceparent!r})"

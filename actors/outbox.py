"""The outbox relay: publish what committed, after it committed.

Actors stage outbox entries in their turn; the journal stores them in the same commit as
the events. Only after that commit does the relay hand them to the sink (e.g. JetStream),
and only after the sink accepted them does it remove them from the journal. A crash in
between publishes them again on the next start: delivery is at least once, and each
entry's ``id`` lets the downstream drop duplicates (``Nats-Msg-Id`` in JetStream).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import anyio
import msgspec
import structlog

from .errors import ActorsError
from .journal.base import Journal, OutboxEntry
from .tracing import TRACEPARENT, Span, Tracer, unsampled

__all__ = ["OutboxRelay", "OutboxSink"]

log = structlog.get_logger("actors.outbox")


class OutboxSink(Protocol):
    """Where committed outbox entries go. Raise a
    :class:`~actors.errors.TransportError` when they could not be delivered."""

    async def publish(self, entries: Sequence[OutboxEntry]) -> None: ...


def trace_publish(
    tracer: Tracer, entries: list[OutboxEntry]
) -> tuple[list[OutboxEntry], list[Span]]:
    """A ``publish event`` span for each entry emitted in a traced turn (its
    ``traceparent`` header names that turn's span), and the entries to send, whose
    ``traceparent`` now names the publish span: consumers continue the trace from it."""
    spans: list[Span] = []
    out = entries
    for i, entry in enumerate(entries):
        headers = entry.headers
        if not headers:
            continue
        parent = headers.get(TRACEPARENT)
        if parent is None or unsampled(parent):
            continue  # not traced, or forwarded as it is
        span = tracer.start(
            "publish event",
            headers,
            {"messaging.destination.name": entry.subject, "messaging.message.id": entry.id},
            "producer",
        )
        if span is None:
            continue
        spans.append(span)
        if out is entries:
            out = list(entries)
        out[i] = msgspec.structs.replace(entry, headers={**headers, TRACEPARENT: span.traceparent})
    return out, spans


class OutboxRelay:
    """Moves committed entries from the journal to the sink, in commit order."""

    def __init__(
        self,
        journal: Journal | None,
        sink: OutboxSink | None,
        *,
        batch: int = 512,
        max_memory: int = 100_000,
        retry_delay: float = 0.2,
    ) -> None:
        self._journal = journal
        self.sink = sink
        self._batch = batch
        self._max_memory = max_memory
        self._retry_delay = retry_delay
        self._queue: deque[OutboxEntry] = deque()
        # True when entries were left in the journal only (memory cap reached or on
        # start): the relay reads them back from the journal before going on.
        self._spilled = journal is not None
        self._draining = False
        self._dirty = False
        self._wake = anyio.Event()
        self._in_flight = 0
        self.published = 0
        #: Spans of traced entries (set by the system; see :mod:`actors.tracing`).
        self.tracer: Tracer | None = None

    def push(self, entries: Sequence[OutboxEntry]) -> None:
        if self._draining:
            # They are in the journal; the drain reads until it sees no new commits.
            self._dirty = True
            return
        if len(self._queue) + len(entries) > self._max_memory:
            self._spilled = True
            self._queue.clear()
        else:
            self._queue.extend(entries)
        self._wake.set()

    def drain_soon(self) -> None:
        """Read the journal's pending entries again soon: in a cluster the journal is
        shared, and a node that died may have left committed entries unpublished (the
        node that takes its shards calls this)."""
        if self._journal is not None:
            self._spilled = True
            self._wake.set()

    @property
    def busy(self) -> bool:
        return (
            bool(self._queue)
            or self._in_flight > 0
            or (self._spilled and self._journal is not None)
        )

    async def _deliver(self, entries: list[OutboxEntry]) -> None:
        self._in_flight = len(entries)
        spans: list[Span] = []
        failure: BaseException | None = None
        if self.tracer is not None:
            entries, spans = trace_publish(self.tracer, entries)
        try:
            while True:
                try:
                    if self.sink is not None:
                        await self.sink.publish(entries)
                    if self._journal is not None:
                        await self._journal.ack_outbox([e.id for e in entries])
                    self.published += len(entries)
                    return
                except ActorsError as exc:
                    log.warning("outbox publish failed; retrying", error=repr(exc))
                    await anyio.sleep(self._retry_delay)
        except BaseException as exc:  # cancelled while retrying: the spans say so
            failure = exc
            raise
        finally:
            self._in_flight = 0
            for span in spans:
                span.end(failure)

    async def _drain_journal(self, journal: Journal) -> None:
        """Publish everything the journal still holds, until a read finds nothing and
        nothing committed meanwhile."""
        self._queue.clear()
        self._draining = True
        try:
            while True:
                self._dirty = False
                try:
                    stored = await journal.outbox(self._batch)
                except ActorsError as exc:
                    log.warning("outbox read failed; retrying", error=repr(exc))
                    await anyio.sleep(self._retry_delay)
                    continue
                if stored:
                    await self._deliver(stored)
                elif not self._dirty:
                    break
        finally:
            self._draining = False
            self._spilled = False

    async def run(self) -> None:
        while True:
            if self._spilled and self._journal is not None:
                await self._drain_journal(self._journal)
                continue
            if not self._queue:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            n = min(self._batch, len(self._queue))
            entries = [self._queue.popleft() for _ in range(n)]
            await self._deliver(entries)

"""The projector: window events from JetStream into the read model, none missed.

It reads ``<prefix>.events.window.>`` from the event stream through a DURABLE pull
consumer, so the server remembers how far it got: a node that restarts resumes there
and sees every event it has not acknowledged. Each fetched batch is applied in one
transaction (:meth:`ReadModel.apply`) and acknowledged only after the commit. A crash
between the two redelivers the batch, which the store skips as duplicates.

The consumer's position and the SQLite file can disagree: the file may be deleted
(to rebuild it) or restored from an older copy while the consumer already acknowledged
further. The store keeps the highest stream sequence it applied, and on every
(re)subscription the projector compares it with the consumer's ack floor; when the
file is behind, the consumer is recreated to start right after the file's position
(from the beginning for an empty file). A stream that was recreated (its last sequence
below the stored position) is read from the beginning as well.

Failures are retried with a capped exponential backoff and never end :meth:`run`: the
stream not existing yet (a node may start before any node created it), NATS errors, a
store that cannot be written. Messages fetched but not committed are nak'ed so they
come back at once rather than after ``ack_wait``. :meth:`run` returns only by
cancellation, from the task group that owns it; on the way out it unsubscribes so the
server stops delivering to an inbox nobody reads.

Fetching goes through :class:`~actors.nats.PullBatches` (nats-py's own fetch spends a
timer and a task on every message, under a crowd a large share of the projector's CPU):
a fetch raises a timeout when no message arrived (that is idleness, not an error); acks
are plain publishes, flushed by the client in the background and ordered before the
next pull request on the same connection.

Traces: with a ``tracer``, each fetched event whose headers carry a sampled
``traceparent`` (the outbox puts the turn's on every event it publishes) gets a
``project event`` span, a child of that context, from the fetch until its batch is
committed to the read model (failed if the commit failed). Events without a context start
no trace; with no tracer, nothing is checked.

Waiting for the projection (tests, read-your-writes in tools): :meth:`wait_for` returns
once a window's view has reached a ``seq``, :meth:`caught_up` once every window event in
the stream at the time of the call is applied. Both wake on the projector's progress
(each commit, and each idle fetch) instead of polling a clock; bound them with
``anyio.fail_after``.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
import nats.errors
import nats.js.errors
import structlog
from anyio.abc import TaskStatus
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from actors.errors import JournalUnavailable, RequestTimeout, TransportError
from actors.nats import NatsTransport, PullBatches
from actors.nats.errors import mapped_errors
from actors.nats.pull import run_pull_consumer
from actors.tracing import TRACEPARENT, Span, Tracer, unsampled
from iceshop.readmodel.store import ReadModel, StreamPosition
from iceshop.wire import DEFAULT_PREFIX, EVENT_STREAM

__all__ = ["DEFAULT_DURABLE", "Projector", "node_durable"]

DEFAULT_DURABLE: Final = "iceshop-readmodel"


def node_durable(node_id: str, clustered: bool) -> str:
    """The consumer of a node's read model: one shared name for a single node (so a
    restarted node resumes where it was), one per node in a cluster, where every node
    keeps its own read model (one shared consumer would split the events between them).
    ``node_id`` must already be a subject-safe token."""
    return f"{DEFAULT_DURABLE}-{node_id}" if clustered else DEFAULT_DURABLE


_log = structlog.get_logger(__name__)


def _end_spans(spans: list[Span], error: BaseException | None) -> None:
    for span in spans:
        span.end(error)


class Projector:
    """Keeps a :class:`ReadModel` up to date with the window events of ``stream``.

    ``durable`` names the consumer. Every node keeps its own read model, so in a cluster
    each node needs its own durable name (for instance with the node id in it): two
    nodes sharing one consumer would each see only part of the events."""

    def __init__(
        self,
        transport: NatsTransport,
        store: ReadModel,
        *,
        stream: str = EVENT_STREAM,
        prefix: str = DEFAULT_PREFIX,
        durable: str = DEFAULT_DURABLE,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        ack_wait: float = 30.0,
        api_timeout: float = 5.0,
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        linger: float = 0.02,
        tracer: Tracer | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.transport = transport
        self.store = store
        self.stream = stream
        self.subject = f"{prefix}.events.window.>"
        self.durable = durable
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self.api_timeout = api_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.linger = linger
        #: Where ``project event`` spans go (None: no tracing).
        self.tracer = tracer
        self.received = 0
        """Messages fetched (redeliveries included)."""
        self.applied = 0
        """Events that changed the read model."""
        self.rebuilds = 0
        """Times the consumer was recreated because the file was behind it."""
        self._progress: anyio.Event | None = None

    # -- running ------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Project until cancelled. With ``task_group.start`` it returns once the first
        subscription is in place (after the stream exists)."""
        await run_pull_consumer(
            self._subscribe,
            self._consume,
            what="read model projection",
            stream=self.stream,
            retry_initial=self.retry_initial,
            retry_max=self.retry_max,
            retry_on=(TransportError, JournalUnavailable),
            task_status=task_status,
        )

    async def _subscribe(self) -> PullBatches | None:
        """The pull subscription on the durable consumer, made consistent with the
        store's position first; ``None`` while the stream does not exist."""
        js = self.transport.jetstream(timeout=self.api_timeout)
        with mapped_errors(f"read model consumer {self.durable}"):
            try:
                stream = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                return None
            position = await self.store.position(self.stream)
            last = stream.state.last_seq
            if position > last:
                _log.warning(
                    "event stream is behind the read model (recreated?); replaying it",
                    stream=self.stream,
                    position=position,
                    last_seq=last,
                )
                position = 0
            try:
                info = await js.consumer_info(self.stream, self.durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None:
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
                if (
                    floor > position
                    or info.config.filter_subject != self.subject
                    or info.config.ack_policy != AckPolicy.ALL
                ):
                    _log.warning(
                        "read model is behind its consumer; replaying from its position",
                        consumer=self.durable,
                        ack_floor=floor,
                        position=position,
                    )
                    await js.delete_consumer(self.stream, self.durable)
                    self.rebuilds += 1
                    info = None
            if info is None:
                await js.add_consumer(self.stream, config=self._config(position))
            return await PullBatches.bind(
                self.transport, self.stream, self.durable, max_batch=self.batch
            )

    def _config(self, position: int) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.subject,
            # Batches are applied in one transaction and in stream order, so acking the
            # last message acknowledges the whole batch: one ack per batch, not per event.
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if position else DeliverPolicy.ALL,
            opt_start_seq=position + 1 if position else None,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, 4 * self.batch),
            max_deliver=-1,
        )

    async def _consume(self, psub: PullBatches) -> None:
        while True:
            try:
                with mapped_errors("read model fetch"):
                    msgs = await psub.fetch(self.batch, timeout=self.fetch_timeout)
            except RequestTimeout:
                self._notify()  # idle: nothing was pending when the fetch expired
                continue
            self.received += len(msgs)
            events = [(msg.subject, msg.data) for msg in msgs]
            spans = self._start_spans(msgs) if self.tracer is not None else None
            # Redeliveries may come out of order: the highest sequence is the position,
            # and acking its message acknowledges everything below it (AckPolicy.ALL).
            top, last = max((msg.metadata.sequence.stream, i) for i, msg in enumerate(msgs))
            try:
                result = await self.store.apply(events, StreamPosition(self.stream, top))
            except BaseException as exc:
                if spans:
                    _end_spans(spans, exc)
                # Back before anything later: on this AckPolicy.ALL consumer, a later
                # message served first and acked would acknowledge them unapplied.
                await psub.hand_back(msgs)
                raise
            if spans:
                _end_spans(spans, None)
            with mapped_errors("read model ack"):
                await msgs[last].ack()
            self.applied += result.applied
            self._notify()
            if len(msgs) < self.batch and self.linger > 0:
                # A partial batch means we are caught up: let events gather for a
                # moment so a busy window costs one fetch and one commit per batch
                # rather than per event (the lists lag by at most ``linger``).
                await anyio.sleep(self.linger)

    def _start_spans(self, msgs: list[Any]) -> list[Span]:
        """A ``project event`` span for each message that carries a sampled context."""
        tracer = self.tracer
        assert tracer is not None
        spans: list[Span] = []
        for msg in msgs:
            headers = msg.headers
            if not headers:
                continue
            traceparent = headers.get(TRACEPARENT)
            if traceparent is None or unsampled(traceparent):
                continue
            attributes = {
                "messaging.destination.name": msg.subject,
                "messaging.batch.message_count": len(msgs),
                "readmodel.consumer": self.durable,
            }
            span = tracer.start("project event", headers, attributes, "consumer")
            if span is not None:
                spans.append(span)
        return spans

    # -- waiting for the projection ---------------------------------------------------------

    def _event(self) -> anyio.Event:
        if self._progress is None:
            self._progress = anyio.Event()
        return self._progress

    def _notify(self) -> None:
        event, self._progress = self._progress, None
        if event is not None:
            event.set()

    async def wait_for(self, window_id: str, seq: int) -> None:
        """Return once the window's view comes from an event with at least ``seq``."""
        while True:
            progress = self._event()
            current = await self.store.window_seq(window_id)
            if current is not None and current >= seq:
                return
            await progress.wait()

    async def caught_up(self) -> None:
        """Return once every window event in the stream when this is called is applied."""
        js = self.transport.jetstream(timeout=self.api_timeout)
        while True:
            progress = self._event()
            with mapped_errors(f"read model consumer {self.durable}"):
                try:
                    info = await js.consumer_info(self.stream, self.durable)
                except nats.js.errors.NotFoundError:
                    info = None
            if info is not None and not info.num_pending:
                delivered = info.delivered.stream_seq if info.delivered is not None else 0
                if await self.store.position(self.stream) >= delivered:
                    return
            await progress.wait()

"""Serve NATS requests with actors: one wildcard subscription per actor kind.

A node subscribes once per kind (say ``shop.carts.*.>``), never once per actor: a
million virtual actors cost no subscriptions. For each request the caller's ``route``
turns the subject tokens, headers and body into ``Routed(key, message, deadline)`` (or an
error reply), and the binding ``tell``\\s the message to ``system.ref(kind, key)`` with a
reply callback. The callback runs synchronously in the dispatcher when the actor replies
(for persistent actors: after the commit), so it must not await: it encodes the reply and
appends it to a bounded deque. One publisher task per binding drains that deque into the
client's write buffer, which the client flushes in the background. The subscription
callback itself does no I/O either: decode, route, tell, return.

Back-pressure is bounded at every step: nats-py's per-subscription pending limits (beyond
them a message is dropped and the requester times out), the actor's bounded mailbox (a
full one answers ``Overloaded`` at once via ``encode``) and the reply deque (a reply that
does not fit is dropped and counted; the requester retries with the same id).

``serve_handler`` answers subjects that are not actors (a read-model query, a status
page) with an async handler, with a bounded number running at once. When the binding
closes, requests still waiting for a slot are not answered (their requesters time out
and retry), so leaving never waits on handlers that may not finish.

Routes and actors see header names in lower case (see :mod:`actors.nats.headers`);
``traceparent``/``tracestate`` are copied from each request to its reply.

With a tracer (the system's, see :mod:`actors.tracing`) each request gets a server span,
``route <kind>`` (``route <subject>`` for a handler), a child of the request's
``traceparent`` when it has one and the root of a new trace otherwise; it lasts until the
reply is queued. The message told to the actor carries that span's ``traceparent``, so the
actor's turn is its child.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import msgspec
import nats.errors
import structlog
from anyio.abc import TaskGroup

from ..errors import ActorsError, ConnectionClosed
from ..tracing import TRACEPARENT, Span, Tracer
from .headers import lower_names, trace_headers
from .transport import Msg, NatsTransport, Subscription

__all__ = [
    "BindingStats",
    "Encode",
    "Handler",
    "NatsBinding",
    "Route",
    "Routed",
    "literal_prefix_len",
]

_log = structlog.get_logger(__name__)


class Routed(msgspec.Struct, frozen=True):
    """Where a request goes: the actor key, the message to tell it and the message's
    deadline (the system clock's monotonic seconds), if any."""

    key: str
    message: Any
    deadline: float | None = None


Route = Callable[[list[str], Mapping[str, str], bytes], Routed | bytes]
"""``route(tokens, headers, payload)``: ``tokens`` are the subject's tokens after the
subscription's literal prefix (``shop.carts.*.>`` and ``shop.carts.C1.add`` give
``["C1", "add"]``); headers have lower-case names. Return :class:`Routed`, or the bytes
of an error reply to send back at once."""

Encode = Callable[[Any], bytes]
"""``encode(value)``: the reply body for an actor's reply value, or for an exception (an
:class:`~actors.errors.ActorsError` from the runtime, or any exception a route or
handler raised, which should become an internal error)."""

Handler = Callable[[list[str], Mapping[str, str], bytes], Awaitable[bytes]]
"""``await handler(tokens, headers, payload)`` returns the reply body."""


class _Ref(Protocol):
    def tell(
        self,
        message: Any,
        *,
        reply_to: Callable[[Any], None] | None = ...,
        headers: Mapping[str, str] | None = ...,
        deadline: float | None = ...,
    ) -> None: ...


class _System(Protocol):
    def ref(self, kind: str, key: str) -> _Ref: ...


class BindingStats:
    """Counters, for tests and benchmarks."""

    __slots__ = (
        "dropped_replies",
        "publish_errors",
        "rejected",
        "replies",
        "requests",
        "route_errors",
    )

    def __init__(self) -> None:
        self.requests = 0
        """Messages received on served subjects."""
        self.replies = 0
        """Replies handed to the client."""
        self.rejected = 0
        """Requests answered at once because ``tell`` raised (``Overloaded``, ...)."""
        self.route_errors = 0
        """Routes or handlers that raised (a bug in the caller's code)."""
        self.dropped_replies = 0
        """Replies dropped: the reply deque was full or the binding was closed."""
        self.publish_errors = 0
        """Replies the client refused (disconnected with a full buffer, ...)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"BindingStats({fields})"


def literal_prefix_len(subject: str) -> int:
    """How many leading tokens of a subscription subject contain no wildcard."""
    n = 0
    for token in subject.split("."):
        if token in ("*", ">"):
            break
        n += 1
    return n


def _start_route_span(tracer: Tracer, name: str, msg: Msg, headers: dict[str, str]) -> Span | None:
    """The request's ``route`` span (None: a new trace that is not sampled); ``headers``
    then name it, for the actor's turn. (Take the reply's trace headers before.)"""
    span = tracer.start(name, headers, {"messaging.destination.name": msg.subject}, "server")
    if span is not None:
        headers[TRACEPARENT] = span.traceparent
    return span


class _Reply:
    """The reply callback of one request: encode, enqueue, once."""

    __slots__ = ("binding", "done", "encode", "headers", "span", "subject")

    def __init__(
        self,
        binding: NatsBinding,
        subject: str,
        headers: dict[str, str] | None,
        encode: Encode,
        span: Span | None = None,
    ) -> None:
        self.binding = binding
        self.subject = subject
        self.headers = headers
        self.encode = encode
        self.span = span
        self.done = False

    def __call__(self, value: Any) -> None:
        if self.done:
            return
        self.done = True
        span = self.span
        if span is not None:  # runtime failures mark it; domain answers are replies
            span.end(value if isinstance(value, ActorsError) else None)
        binding = self.binding
        try:
            payload = self.encode(value)
        except Exception as exc:
            binding.stats.route_errors += 1
            _log.exception("encoding a reply failed", subject=self.subject)
            try:  # the requester still gets an answer: the encoder's own error reply
                payload = self.encode(exc)
            except Exception:
                binding._finished()
                return
        binding._enqueue(self.subject, payload, self.headers)
        binding._finished()


class NatsBinding:
    """Routes requests on NATS subjects to the actors of ``system``.

    Use as ``async with NatsBinding(system, transport) as binding:`` inside the system's
    own ``async with``; leaving it stops the subscriptions, waits up to
    ``shutdown_timeout`` for the replies of requests already told, then stops."""

    def __init__(
        self,
        system: _System,
        transport: NatsTransport,
        *,
        reply_capacity: int = 65_536,
        pending_msgs_limit: int = 65_536,
        pending_bytes_limit: int = 64 * 1024 * 1024,
        handler_concurrency: int = 64,
        shutdown_timeout: float = 5.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.system = system
        #: Spans of requests (:mod:`actors.tracing`); by default the system's tracer.
        self.tracer: Tracer | None = (
            tracer if tracer is not None else getattr(system, "tracer", None)
        )
        self.transport = transport
        self.reply_capacity = reply_capacity
        self.pending_msgs_limit = pending_msgs_limit
        self.pending_bytes_limit = pending_bytes_limit
        self.handler_concurrency = handler_concurrency
        self.shutdown_timeout = shutdown_timeout
        self.stats = BindingStats()
        self._replies: deque[tuple[str, bytes, dict[str, str] | None]] = deque()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._in_flight = 0
        self._subs: list[Subscription] = []
        self._tg: TaskGroup | None = None
        self._open = False
        self._closing = anyio.Event()
        self._slot_waiters: set[anyio.CancelScope] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._open = True
        tg.start_soon(self._publisher, name="nats-binding-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None, "NatsBinding was not entered"
        try:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
        finally:
            self._open = False
            self._tg = None
            tg.cancel_scope.cancel()
            result = await tg.__aexit__(exc_type, exc, tb)
        return result

    async def _shutdown(self) -> None:
        # Requests waiting for a handler slot give up: a drain must not wait on handlers
        # that may never finish (they are cancelled after ``shutdown_timeout``).
        self._closing.set()
        for scope in list(self._slot_waiters):
            scope.cancel()
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await self.transport.unsubscribe(sub, drain=True)
            except ActorsError as exc:
                _log.debug("unsubscribe failed on shutdown", error=repr(exc))
        with anyio.move_on_after(self.shutdown_timeout):
            while self._in_flight > 0 or self._replies:
                self._idle = anyio.Event()
                await self._idle.wait()
        if self._in_flight > 0:
            _log.warning("binding closed with requests still in flight", count=self._in_flight)

    @property
    def in_flight(self) -> int:
        """Requests being handled (told to an actor, or in a handler) whose reply has not
        been queued yet. Leaving ``async with`` waits for them."""
        return self._in_flight

    def _finished(self) -> None:
        """One request in flight is done (its reply, if any, is queued)."""
        self._in_flight -= 1
        if self._in_flight <= 0:
            self._wake.set()  # the publisher tells a waiting shutdown

    # -- serving -----------------------------------------------------------------------

    async def serve(
        self,
        kind: str,
        subject: str,
        route: Route,
        encode: Encode,
        queue: str | None = None,
    ) -> Subscription:
        """Subscribe ``subject`` (with wildcards) and route each request to an actor of
        ``kind``. ``queue`` names a queue group to share the load between nodes."""
        skip = literal_prefix_len(subject)
        system = self.system
        stats = self.stats
        enqueue = self._enqueue
        span_name = f"route {kind}"

        async def on_msg(msg: Msg) -> None:
            stats.requests += 1
            reply = msg.reply
            headers = lower_names(msg.headers)
            trace = trace_headers(headers)  # the request's own, for its reply
            tracer = self.tracer
            span = None if tracer is None else _start_route_span(tracer, span_name, msg, headers)
            try:
                routed = route(msg.subject.split(".")[skip:], headers, msg.data)
                if isinstance(routed, bytes):
                    if reply:
                        enqueue(reply, routed, trace)
                    if span is not None:
                        span.end()
                    return
                ref = system.ref(kind, routed.key)
            except Exception as exc:
                stats.route_errors += 1
                _log.exception("routing a request failed", subject=msg.subject)
                if reply:
                    self._reply_error(reply, exc, encode, trace)
                if span is not None:
                    span.end(exc)
                return
            if not reply:
                try:
                    ref.tell(routed.message, headers=headers, deadline=routed.deadline)
                except ActorsError:
                    stats.rejected += 1
                except Exception:
                    stats.route_errors += 1
                    _log.exception("telling an actor failed", subject=msg.subject)
                if span is not None:
                    span.end()
                return
            cb = _Reply(self, reply, trace, encode, span)
            self._in_flight += 1
            try:
                ref.tell(routed.message, reply_to=cb, headers=headers, deadline=routed.deadline)
            except ActorsError as exc:
                stats.rejected += 1
                cb(exc)
            except Exception as exc:
                stats.route_errors += 1
                _log.exception("telling an actor failed", subject=msg.subject)
                cb(exc)

        return await self._subscribe(subject, queue, on_msg)

    async def serve_handler(
        self,
        subject: str,
        handler: Handler,
        encode: Encode | None = None,
        *,
        queue: str | None = None,
        concurrency: int | None = None,
    ) -> Subscription:
        """Answer ``subject`` with ``await handler(tokens, headers, payload)``. At most
        ``concurrency`` (default ``handler_concurrency``) run at once; beyond that the
        subscription waits, and then nats-py's pending limits apply. When the handler
        raises, the reply is ``encode(exc)`` (no reply without ``encode``)."""
        skip = literal_prefix_len(subject)
        slots = anyio.Semaphore(concurrency or self.handler_concurrency)
        tg = self._require_open()
        span_name = f"route {subject}"

        async def run(msg: Msg, headers: dict[str, str]) -> None:
            trace = trace_headers(headers)
            tracer = self.tracer
            span = None if tracer is None else _start_route_span(tracer, span_name, msg, headers)
            failure: Exception | None = None
            try:
                payload = await handler(msg.subject.split(".")[skip:], headers, msg.data)
            except Exception as exc:
                failure = exc
                self.stats.route_errors += 1
                _log.exception("handler failed", subject=msg.subject)
                if msg.reply and encode is not None:
                    self._reply_error(msg.reply, exc, encode, trace)
            else:
                if msg.reply:
                    self._enqueue(msg.reply, payload, trace)
            finally:
                if span is not None:
                    span.end(failure)
                slots.release()
                self._finished()

        async def on_msg(msg: Msg) -> None:
            self.stats.requests += 1
            if not await self._take_slot(slots):
                self.stats.dropped_replies += 1  # closing: the requester times out, retries
                return
            self._in_flight += 1
            tg.start_soon(run, msg, lower_names(msg.headers))

        return await self._subscribe(subject, queue, on_msg)

    async def _take_slot(self, slots: anyio.Semaphore) -> bool:
        """Wait for a handler slot; ``False`` when the binding closes meanwhile (or is
        closing and none is free)."""
        try:
            slots.acquire_nowait()
            return True
        except anyio.WouldBlock:
            if self._closing.is_set():
                return False
        with anyio.CancelScope() as scope:
            self._slot_waiters.add(scope)
            try:
                await slots.acquire()
            finally:
                self._slot_waiters.discard(scope)
        return not scope.cancelled_caught

    async def _subscribe(
        self, subject: str, queue: str | None, on_msg: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        self._require_open()
        sub = await self.transport.subscribe(
            subject,
            on_msg,
            queue or "",
            pending_msgs_limit=self.pending_msgs_limit,
            pending_bytes_limit=self.pending_bytes_limit,
        )
        self._subs.append(sub)
        # Return only once the server knows the interest: a request sent right after
        # ``serve`` returns must not meet "no responders".
        await self.transport.flush()
        return sub

    def _require_open(self) -> TaskGroup:
        if not self._open or self._tg is None:
            raise ConnectionClosed("NatsBinding is not running (use it with 'async with')")
        return self._tg

    # -- replies -----------------------------------------------------------------------

    def _reply_error(
        self, subject: str, exc: Exception, encode: Encode, headers: dict[str, str] | None
    ) -> None:
        try:
            payload = encode(exc)
        except Exception:
            _log.exception("encoding an error reply failed", subject=subject)
            return
        self._enqueue(subject, payload, headers)

    def _enqueue(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        """Queue a reply for the publisher; never blocks, never raises."""
        if not self._open or len(self._replies) >= self.reply_capacity:
            self.stats.dropped_replies += 1
            return
        self._replies.append((subject, payload, headers))
        wake = self._wake
        if not wake.is_set():
            wake.set()

    async def _publisher(self) -> None:
        """The only task that publishes replies; drains the deque, then sleeps."""
        replies = self._replies
        stats = self.stats
        while True:
            if replies:
                try:
                    nc = self.transport.client
                except ConnectionClosed:
                    stats.publish_errors += len(replies)
                    replies.clear()
                while replies:
                    subject, payload, headers = replies.popleft()
                    try:
                        await nc.publish(subject, payload, headers=headers)
                    except (nats.errors.Error, OSError) as exc:
                        stats.publish_errors += 1
                        _log.debug("reply publish failed", subject=subject, error=repr(exc))
                    except Exception as exc:  # never let one reply end the publisher task
                        stats.publish_errors += 1
                        _log.error("reply publish failed", subject=subject, error=repr(exc))
                    else:
                        stats.replies += 1
            if self._in_flight <= 0:
                self._idle.set()
            self._wake = anyio.Event()
            if replies:
                continue
            await self._wake.wait()

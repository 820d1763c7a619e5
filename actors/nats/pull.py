"""Durable JetStream pull consumers: a cheap batch fetch, and the loop that keeps one
bound (bind, consume, and bind again).

:class:`PullBatches` fetches batches from a durable pull consumer. nats-py's own
``PullSubscription.fetch`` waits for every message separately (a fresh timer and task
each), which under a burst costs more CPU than handling the messages; here a batch costs
one pull request and one timer, and a message one append in a subscription callback.

A long-running consumer (a projection, a worker pool) has the same outer life whatever
it does with the messages: wait while its stream does not exist yet, bind to its durable
consumer, consume until the subscription fails, unsubscribe, and try again with
exponential backoff, answering ``task_status.started()`` the first time it is bound.
:func:`run_pull_consumer` is that loop; the caller brings how to bind and how to
consume.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

import anyio
import nats.errors
import structlog
from anyio.abc import TaskStatus

from ..errors import NoResponders, RequestTimeout, TransportError
from .errors import mapped_errors
from .transport import Msg, NatsTransport, Subscription

__all__ = ["PullBatches", "run_pull_consumer", "unsubscribe_quietly"]

log = structlog.get_logger("actors.nats.pull")

_STATUS: Final = "Status"
_DESCRIPTION: Final = "Description"
_HEARTBEAT: Final = "100"  # an idle heartbeat: the request lives on
_NO_MESSAGES: Final = "404"  # nothing to deliver to a no-wait request: it ended
_EXPIRED: Final = "408"  # the request's ``expires`` passed: it ended
_CONFLICT: Final = "409"  # the request ended for a reason; most reasons are fatal
_NO_RESPONDERS: Final = "503"  # nobody serves the JetStream API (not enabled, no leader)
#: 409s that end one request and nothing more: too many requests waiting (this one was
#: refused), or the consumer's leader moved (in a cluster; the new leader takes the next).
_REQUEST_ENDED: Final = ("Exceeded MaxWaiting", "Leadership Change")
#: How long stopping the deliveries may take (a round trip) before giving up on it.
_STOP_TIMEOUT: Final = 2.0
#: A request whose end never came (its status lost with a connection) is given up this
#: long after its expiry, so one lost status cannot stall the consumer for good.
_OVERDUE_MARGIN: Final = 1.0
_NEXT: Final = "$JS.API.CONSUMER.MSG.NEXT"


class PullBatches:
    """Batches from the durable pull consumer ``durable`` on ``stream``, which must exist.

    One core subscription on a private inbox receives everything the consumer delivers;
    pull requests for it are published by hand, at most one outstanding at a time. The
    callback appends each message to a buffer, so the buffer never holds more than was
    requested, and a message that arrives after :meth:`fetch` gave up waiting is kept for
    the next one rather than lost (on an ``AckPolicy.ALL`` consumer, acking a later
    message would acknowledge it unseen). The messages are nats-py's own, so ``ack``,
    ``nak`` and ``metadata`` work as usual.

    ``fetch`` takes at most ``max_batch`` messages at a time. One fetch at a time: the
    class is for one consuming loop. Build it with :meth:`bind`; :meth:`unsubscribe`
    (or leaving ``async with``) hands back the messages still buffered."""

    def __init__(
        self, transport: NatsTransport, stream: str, durable: str, *, max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.transport = transport
        self.stream = stream
        self.durable = durable
        self.max_batch = max_batch
        self.requests = 0
        """Pull requests sent so far."""
        self._next_subject = f"{_NEXT}.{stream}.{durable}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._owed = 0
        """Messages the outstanding request may still deliver (0: none outstanding)."""
        self._overdue_at = 0.0
        self._failure: TransportError | None = None
        self._wake: anyio.Event | None = None

    @classmethod
    async def bind(
        cls, transport: NatsTransport, stream: str, durable: str, *, max_batch: int = 256
    ) -> Self:
        """Subscribe to a fresh inbox for the consumer's deliveries."""
        batches = cls(transport, stream, durable, max_batch=max_batch)
        await batches._subscribe()
        return batches

    async def _subscribe(self) -> None:
        self._inbox = self.transport.new_inbox()
        self._owed, self._failure = 0, None
        # The server sends no more than was requested (plus a status or two), and the
        # callback never waits, so this limit is only reached by a bug.
        self._sub = await self.transport.subscribe(
            self._inbox, self._on_msg, pending_msgs_limit=4 * self.max_batch + 64
        )

    @property
    def buffered(self) -> int:
        """Messages delivered and not yet returned by :meth:`fetch`."""
        return len(self._buffer)

    async def fetch(self, n: int, timeout: float) -> list[Msg]:  # noqa: ASYNC109 - sent as the expiry
        """Up to ``n`` messages in delivery order, as soon as there is at least one.

        Raises :class:`~actors.errors.RequestTimeout` when none came within ``timeout``
        seconds (the consumer is idle), :class:`~actors.errors.TransportError` once the
        consumer is gone or refuses the requests (bind again)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        n = min(n, self.max_batch)
        deadline = anyio.current_time() + timeout
        requested = False
        while True:
            if self._failure is not None:
                raise self._failure
            if self._buffer:
                return self._take(n)
            if self._sub is None:
                raise TransportError(f"pull consumer {self._name}: unsubscribed")
            now = anyio.current_time()
            if not requested and (self._owed == 0 or now > self._overdue_at):
                # One request per call: a request refused at once (too many waiting)
                # must not turn this wait into a loop of requests.
                await self._request(n, timeout, now)
                requested = True
            if now >= deadline:
                raise RequestTimeout(f"pull consumer {self._name}: nothing within {timeout:g}s")
            wake = self._wake = anyio.Event()
            with anyio.move_on_after(deadline - now):
                await wake.wait()
            self._wake = None

    def _take(self, n: int) -> list[Msg]:
        buffer = self._buffer
        if len(buffer) <= n:
            msgs = list(buffer)
            buffer.clear()
            return msgs
        return [buffer.popleft() for _ in range(n)]

    async def _request(self, n: int, expires: float, now: float) -> None:
        body = json.dumps({"batch": n, "expires": max(int(expires * 1e9), 1_000_000)})
        await self.transport.publish(self._next_subject, body.encode(), reply=self._inbox)
        self.requests += 1
        self._owed = n
        self._overdue_at = now + expires + _OVERDUE_MARGIN

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a delivery: its reply subject is the ack subject
            self._buffer.append(msg)
            if self._owed > 0:
                self._owed -= 1
        else:
            self._on_status(msg)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get(_STATUS, "")
        description = headers.get(_DESCRIPTION, "")
        if status == _HEARTBEAT:
            return
        self._owed = 0  # every other status ends the outstanding request
        if status in (_EXPIRED, _NO_MESSAGES):
            return
        if status == _CONFLICT and any(reason in description for reason in _REQUEST_ENDED):
            log.debug("pull request ended", consumer=self._name, reason=description)
            return
        # The consumer was deleted or refuses what is asked of it:
        # nothing more comes through this binding.
        what = f"pull consumer {self._name}: {status} {description}".rstrip()
        if status == _NO_RESPONDERS:
            self._failure = NoResponders(f"{what} (is JetStream available?)")
        else:
            self._failure = TransportError(what)

    @property
    def _name(self) -> str:
        return f"{self.stream}/{self.durable}"

    async def unsubscribe(self) -> None:
        """Stop the deliveries. What the server delivered up to then is taken in and,
        with the messages still buffered, NAK'ed (best effort), so it comes back at once
        to the next binding rather than after the ack wait."""
        sub, self._sub = self._sub, None
        if sub is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._stop_deliveries(sub)
            except TransportError as exc:
                log.debug("pull consumer stop failed", consumer=self._name, error=repr(exc))
            self._owed = 0
            buffered = list(self._buffer)
            self._buffer.clear()
            await self.hand_back(buffered)
            await self.transport.unsubscribe(sub, drain=False)

    async def hand_back(self, msgs: list[Msg]) -> None:
        """NAK ``msgs`` (e.g. a batch that could not be handled) and wait until the server
        has handled the NAKs, so they come back before anything later. The server
        handles acks in order and answers one sent as a request, so one request, last,
        is enough. Waiting matters on an ``AckPolicy.ALL`` consumer: a next binding
        served before the NAKs count would get later messages first, and acking one of
        those would acknowledge the handed-back ones unseen.

        Best effort and shielded from cancellation: a failure is logged, and the
        messages then come back after the consumer's ack wait."""
        if not msgs:
            return
        with anyio.CancelScope(shield=True):
            try:
                for msg in msgs[:-1]:
                    await msg.nak()
                await self.transport.request(msgs[-1].reply, b"-NAK", timeout=_STOP_TIMEOUT)
            except (nats.errors.Error, OSError, TransportError) as exc:
                log.debug("pull consumer nak failed", consumer=self._name, error=repr(exc))

    async def _stop_deliveries(self, sub: Subscription) -> None:
        """Have the server stop delivering to the inbox, and take in what it sent before.

        A pull request cannot be withdrawn: until it ends the server keeps delivering,
        and a message sent to an inbox nobody reads any more counts as delivered; on an
        ``AckPolicy.ALL`` consumer the next binding's first ack would acknowledge it
        unseen. The server stops choosing a request once its inbox has no subscriber,
        so: unsubscribe on the server while the subscription still takes messages here,
        wait for a round trip, and let the callback take what arrived before it. (Not
        nats-py's ``drain``: it writes its PING ahead of the UNSUB it queued, so its
        round trip can end before the server stopped.)"""
        nc = self.transport.client
        with mapped_errors(f"unsubscribe {self._inbox}"):
            await nc._send_unsubscribe(sub._id)
        await self.transport.flush(timeout=_STOP_TIMEOUT)
        with anyio.move_on_after(_STOP_TIMEOUT):
            await sub._pending_queue.join()

    async def __aenter__(self) -> Self:
        if self._sub is None:
            await self._subscribe()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()


async def run_pull_consumer(
    subscribe: Callable[[], Awaitable[Any | None]],
    consume: Callable[[Any], Awaitable[None]],
    *,
    what: str,
    stream: str,
    retry_initial: float,
    retry_max: float,
    retry_on: tuple[type[Exception], ...] = (TransportError,),
    on_ready: Callable[[], None] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind with ``subscribe()`` (``None`` while the stream is missing) and run
    ``consume(psub)`` until cancelled, rebinding after a failure in ``retry_on``.
    ``what`` names the consumer in the logs; ``on_ready`` runs once, when first bound."""
    delay = retry_initial
    started = False
    waiting_logged = False
    while True:
        try:
            psub = await subscribe()
            if psub is None:
                if not waiting_logged:
                    log.info(f"{what} waits for its stream", stream=stream)
                    waiting_logged = True
            else:
                delay = retry_initial
                waiting_logged = False
                if not started:
                    started = True
                    if on_ready is not None:
                        on_ready()
                    task_status.started()
                try:
                    await consume(psub)
                finally:
                    await unsubscribe_quietly(psub, what)
        except retry_on as exc:
            log.warning(f"{what} failed; retrying", error=repr(exc), retry_in=delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, retry_max)


async def unsubscribe_quietly(psub: Any, what: str) -> None:
    """Unsubscribe, shielded from cancellation; a connection already gone is fine."""
    with anyio.CancelScope(shield=True):
        try:
            await psub.unsubscribe()
        except (nats.errors.Error, OSError, ValueError, TransportError) as exc:
            log.debug(f"{what} unsubscribe failed", error=repr(exc))

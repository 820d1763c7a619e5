"""Messages to actors owned by other nodes, over NATS.

In a cluster an actor lives on the node that owns its shard. When something on node A
tells (or asks) an actor owned by node B, :class:`RemoteMessenger` carries the message
to B, B tells it to the actor, and the reply (if any) comes back to A's reply callback.

Subjects. Each node subscribes twice, and nothing else is needed however many actors
there are:

* ``<prefix>.<node>`` — messages for actors this node owns;
* ``<prefix>.<node>.<cid>`` (one ``*`` subscription) — answers to the messages this node
  sent: every message is published with its own reply subject ending in a correlation id
  (``cid``), fresh for each attempt.

Replies use that per-message reply subject rather than a header on the node's inbox
because NATS itself answers there: a message published to a subject nobody subscribes
to (its owner died) makes the server send a ``503`` status message to the reply subject,
with no payload and none of the message's headers, so only the subject can say which
message failed. The same reply subject also carries the owner's "moved" status and the
actor's reply. A fresh ``cid`` per attempt makes a late answer to an earlier attempt fall
on nothing.

Headers of a message: ``actor-kind``, ``actor-key``, ``actor-tag`` (the codec's tag of the
body), ``actor-from`` (the sender node), ``actor-ttl`` (the deadline as *remaining*
seconds: the nodes' monotonic clocks are unrelated, so the receiver adds it to its own),
``actor-ask`` (the ``cid``, only when a reply is wanted), then the caller's own headers
(``traceparent``, ...), which the receiving actor sees with lower-case names.

Never waiting. :meth:`RemoteMessenger.send` is called from inside actor turns, like
``ActorRef.tell``: it locates the owner, encodes and appends to a bounded deque that one
publisher task drains into the client's write buffer. The subscription callbacks do no I/O
either: decode, ``deliver`` (which tells the local actor) and return; replies go through
the same deque.

What can go wrong, and what the caller's reply callback then gets (once):

* the deque is full: :class:`~actors.errors.Overloaded` at once;
* nobody owns the shard (``locate`` gives ``None``), the owner answered "moved" (its
  ``deliver`` raised :class:`~actors.errors.NotLocal`) or NATS said no responders: the
  owner is located again and, if that names another node, the message goes there now;
  otherwise it is *parked* until :meth:`~RemoteMessenger.owners_changed`. Parking is
  bounded (``max_parked``); the oldest parked message fails first, with
  :class:`~actors.errors.NoResponders`;
* the deadline passes while the message is queued or parked (never delivered):
  :class:`~actors.errors.DeadlineExceeded` (a parked message without a deadline of its
  own gives up after ``default_timeout`` with ``NoResponders``);
* the deadline passes after the message left (it may have been applied):
  :class:`~actors.errors.AskTimeout`. An ask without a deadline waits ``default_timeout``.
  One heap and one sweeping task keep every deadline, not a task per message.

Tells are at most once: a tell is resent only after a "moved" or no-responders answer
proves it was not handled. To be able to resend, a tell is remembered until its deadline
(``default_timeout`` without one) in a bounded table; when that is full the oldest is
forgotten (it has almost surely arrived) and simply cannot be resent any more. A tell that
cannot be sent or parked is dropped and counted. A message sent to an owner that dies
before handling it (its subscription still known to NATS) is lost: an ask then times out.

When the owner is this node (a parked message whose shard came here) the message is handed
to ``deliver`` directly, with the caller's own reply callback.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio
import nats.errors
import structlog
from anyio.abc import TaskStatus

from ..clock import Clock
from ..dispatcher import deliver as call_reply
from ..envelope import Reply
from ..errors import (
    ActorsError,
    AskTimeout,
    CodecError,
    ConnectionClosed,
    DeadlineExceeded,
    NoResponders,
    NotLocal,
    Overloaded,
)
from ..nats.errors import map_error
from ..nats.transport import Msg, NatsTransport, Subscription
from .codec import MessageCodec

__all__ = ["HEADERS", "Deliver", "Locate", "RemoteMessenger", "RemoteStats"]

_log = structlog.get_logger(__name__)

H_KIND: Final = "actor-kind"
H_KEY: Final = "actor-key"
H_TAG: Final = "actor-tag"
H_FROM: Final = "actor-from"
H_TTL: Final = "actor-ttl"
H_ASK: Final = "actor-ask"
H_STATUS: Final = "actor-status"
HEADERS: Final = frozenset((H_KIND, H_KEY, H_TAG, H_FROM, H_TTL, H_ASK, H_STATUS))
"""The header names this layer uses (removed before the receiving actor sees headers)."""

_MOVED: Final = "moved"
_NATS_STATUS: Final = "Status"  # how nats-py names a server status header
_NO_RESPONDERS: Final = "503"

#: How many times in a row a message follows "moved"/no-responders answers to a new
#: owner before it parks until the owners change (a shield against two nodes that each
#: think the other owns the shard).
MAX_HOPS: Final = 4

Deliver = Callable[[str, str, Any, Reply | None, Mapping[str, str] | None, float | None], None]
"""``deliver(kind, key, message, reply_to, headers, deadline)`` tells a local actor
(``deadline`` in this node's monotonic seconds); raises
:class:`~actors.errors.NotLocal` when the actor's shard is not owned here."""

Locate = Callable[[str, str], str | None]
"""``locate(kind, key)``: the id of the node owning the actor, or ``None`` when nobody
owns its shard at the moment."""

# Life of an outgoing message.
_QUEUED = 0  # in the deque, not yet published (and in a pending table)
_SENT = 1  # published, waiting for a reply/status or its deadline (in a pending table)
_PARKED = 2  # waiting for owners_changed (in the parking table)
_DONE = 3  # answered, delivered locally, forgotten or failed


class RemoteStats:
    """Counters, for tests, metrics and benchmarks."""

    __slots__ = ("dropped", "parked", "received", "replies", "retried", "sent", "timeouts")

    def __init__(self) -> None:
        self.sent = 0
        """Messages published to other nodes (each attempt counts)."""
        self.received = 0
        """Messages received from other nodes for local actors."""
        self.replies = 0
        """Replies that came back and answered an ask."""
        self.parked = 0
        """Times a message was parked (no owner, "moved", or no responders)."""
        self.retried = 0
        """Messages sent again after "moved", no responders or an owner change."""
        self.dropped = 0
        """Tells and replies lost: a full deque or parking, a deadline passed before they
        left, a received tell that could not be decoded or delivered."""
        self.timeouts = 0
        """Asks answered by their deadline (AskTimeout, DeadlineExceeded, NoResponders)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"RemoteStats({fields})"


class _Outgoing:
    """One message on its way to another node (across attempts)."""

    __slots__ = (
        "armed",
        "attempts",
        "cid",
        "deadline",
        "expires",
        "headers",
        "key",
        "kind",
        "message",
        "owner",
        "payload",
        "reply_to",
        "state",
        "tag",
    )

    def __init__(
        self,
        kind: str,
        key: str,
        message: Any,
        tag: str,
        payload: bytes,
        reply_to: Reply | None,
        headers: dict[str, str] | None,
        deadline: float | None,
        expires: float,
    ) -> None:
        self.kind = kind
        self.key = key
        self.message = message
        self.tag = tag
        self.payload = payload
        self.reply_to = reply_to
        self.headers = headers
        self.deadline = deadline
        self.expires = expires
        self.cid = 0
        self.owner = ""
        self.state = _QUEUED
        self.attempts = 0
        self.armed = False


_Answer = tuple[str, bytes, dict[str, str]]
"""A reply or status to publish: subject, payload, headers."""


class _RemoteReply:
    """The reply callback handed to a local actor for an ask from another node."""

    __slots__ = ("done", "messenger", "subject")

    def __init__(self, messenger: RemoteMessenger, subject: str) -> None:
        self.messenger = messenger
        self.subject = subject
        self.done = False

    def __call__(self, value: Any) -> None:
        if self.done:
            return
        self.done = True
        messenger = self.messenger
        try:
            tag, payload = messenger.codec.encode(value)
        except CodecError as exc:  # the asker learns why instead of timing out
            _log.warning("reply not encodable", error=str(exc))
            tag, payload = messenger.codec.encode(exc)
        messenger._enqueue_reply(self.subject, payload, {H_TAG: tag})


def _check_subject(what: str, value: str, *, dots: bool) -> None:
    bad = [c for c in value if c in "*> \t\r\n" or (c == "." and not dots)]
    if not value or bad or value.startswith(".") or value.endswith(".") or ".." in value:
        raise ValueError(f"{what} {value!r} is not usable in a NATS subject")


class RemoteMessenger:
    """Carries actor messages between nodes over one NATS connection.

    Start it with ``await task_group.start(messenger.run)``; it serves until cancelled,
    and then answers every message still waiting with
    :class:`~actors.errors.ConnectionClosed`.

    Bounds: ``max_outgoing`` messages and replies queued for the publisher,
    ``max_parked`` messages waiting for an owner, ``max_pending`` asks in flight (and as
    many tells remembered for resending). ``default_timeout`` is the deadline of an ask
    without one and the parking life of a message without one."""

    def __init__(
        self,
        transport: NatsTransport,
        *,
        node_id: str,
        subject_prefix: str,
        codec: MessageCodec,
        clock: Clock,
        deliver: Deliver,
        locate: Locate,
        max_parked: int = 10_000,
        max_outgoing: int = 65_536,
        max_pending: int = 65_536,
        default_timeout: float = 10.0,
    ) -> None:
        _check_subject("node id", node_id, dots=False)
        _check_subject("subject prefix", subject_prefix, dots=True)
        self.transport = transport
        self.node_id = node_id
        self.subject_prefix = subject_prefix
        self.codec = codec
        self.clock = clock
        self.max_parked = max_parked
        self.max_outgoing = max_outgoing
        self.max_pending = max(1, max_pending)
        self.default_timeout = default_timeout
        self.stats = RemoteStats()
        self._deliver = deliver
        self._locate = locate
        self._inbox = f"{subject_prefix}.{node_id}"
        self._reply_prefix = f"{self._inbox}."
        self._cids = itertools.count(1)
        # Asks in flight by cid; tells in flight (oldest first, evicted when full).
        self._asks: dict[int, _Outgoing] = {}
        self._tells: OrderedDict[int, _Outgoing] = OrderedDict()
        self._parked: OrderedDict[int, _Outgoing] = OrderedDict()
        self._outgoing: deque[_Outgoing | _Answer] = deque()
        self._publish_wake = anyio.Event()
        # Deadlines: (expires, seq, message); answered entries are skipped (lazy deletion).
        self._heap: list[tuple[float, int, _Outgoing]] = []
        self._seq = itertools.count()
        self._sweep_wake = anyio.Event()
        self._sleeping_until = math.inf
        self._running = False

    # -- introspection -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pending(self) -> int:
        """Asks sent (or queued) and not answered yet."""
        return len(self._asks)

    @property
    def parked(self) -> int:
        """Messages waiting for their owner to be known again."""
        return len(self._parked)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe this node's subjects, then publish and keep deadlines until cancelled."""
        if self._running:
            raise RuntimeError("this RemoteMessenger is already running")
        transport = self.transport
        subs: list[Subscription] = []
        try:
            async with anyio.create_task_group() as tg:
                subs.append(await transport.subscribe(self._inbox, self._on_message))
                subs.append(await transport.subscribe(f"{self._inbox}.*", self._on_answer))
                # Others must find the subscriptions as soon as run has started.
                await transport.flush()
                self._running = True
                tg.start_soon(self._publisher, name="remote-messenger-publisher")
                tg.start_soon(self._sweeper, name="remote-messenger-deadlines")
                task_status.started()
        finally:
            self._running = False
            self._fail_all(ConnectionClosed("the remote messenger stopped"))
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    try:
                        await transport.unsubscribe(sub, drain=False)
                    except ActorsError as exc:
                        _log.debug("unsubscribe failed on stop", error=repr(exc))

    def _fail_all(self, error: ActorsError) -> None:
        waiting = [*self._asks.values(), *self._tells.values(), *self._parked.values()]
        self._asks.clear()
        self._tells.clear()
        self._parked.clear()
        self._heap.clear()
        for item in self._outgoing:
            if type(item) is _Outgoing and item.state != _DONE:
                waiting.append(item)
        self._outgoing.clear()
        for msg in waiting:
            if msg.state != _DONE:
                self._fail(msg, error)

    # -- sending -----------------------------------------------------------------------

    def send(
        self,
        kind: str,
        key: str,
        message: Any,
        *,
        reply_to: Reply | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> None:
        """Send ``message`` to actor ``(kind, key)`` wherever it lives; never waits.

        ``reply_to`` (an ask) is called once with the reply value or an
        :class:`~actors.errors.ActorsError`. ``deadline`` is this node's monotonic
        seconds. Raises :class:`~actors.errors.CodecError` when the message's type is not
        registered with the codec; every other failure goes to ``reply_to``."""
        now = self.clock.monotonic()
        tag, payload = self.codec.encode(message)
        expires = deadline if deadline is not None else now + self.default_timeout
        msg = _Outgoing(
            kind,
            key,
            message,
            tag,
            payload,
            reply_to,
            dict(headers) if headers else None,
            deadline,
            expires,
        )
        if deadline is not None and deadline <= now:
            self._fail(msg, DeadlineExceeded(f"{kind}/{key}: the deadline passed before sending"))
            return
        self._route(msg, self._locate(kind, key))

    def owners_changed(self) -> None:
        """Shard owners changed: locate every parked message again and send those whose
        owner is known (in the order they were parked)."""
        if not self._parked:
            return
        waiting = list(self._parked.values())
        self._parked.clear()
        now = self.clock.monotonic()
        for msg in waiting:
            if msg.expires <= now:
                self._expire(msg)
                continue
            owner = self._locate(msg.kind, msg.key)
            if owner is None:
                msg.cid = next(self._cids)
                self._parked[msg.cid] = msg  # stays parked, in order
                continue
            self.stats.retried += 1
            msg.attempts = 0
            self._route(msg, owner)

    def _route(self, msg: _Outgoing, owner: str | None) -> None:
        if owner is None:
            self._park(msg)
        elif owner == self.node_id:
            self._deliver_here(msg)
        else:
            self._dispatch(msg, owner)

    def _deliver_here(self, msg: _Outgoing) -> None:
        """The owner is this node: hand the message over without NATS."""
        msg.state = _DONE
        try:
            self._deliver(msg.kind, msg.key, msg.message, msg.reply_to, msg.headers, msg.deadline)
        except NotLocal:
            self._park(msg)
        except ActorsError as exc:
            self._fail(msg, exc)

    def _dispatch(self, msg: _Outgoing, owner: str) -> None:
        """Queue ``msg`` for the publisher, under a fresh cid."""
        if not self._running:
            self._fail(msg, ConnectionClosed("the remote messenger is not running"))
            return
        if len(self._outgoing) >= self.max_outgoing:
            self._fail(msg, Overloaded(f"{msg.kind}/{msg.key}: outgoing queue full"))
            return
        cid = next(self._cids)
        if msg.reply_to is not None:
            if len(self._asks) >= self.max_pending:
                self._fail(msg, Overloaded(f"{msg.kind}/{msg.key}: too many asks in flight"))
                return
            self._asks[cid] = msg
        else:
            tells = self._tells
            if len(tells) >= self.max_pending:
                # The oldest tell has almost surely arrived; forgotten here, it still
                # leaves (if queued) but can no longer be resent.
                tells.popitem(last=False)
            tells[cid] = msg
        msg.cid = cid
        msg.owner = owner
        msg.state = _QUEUED
        self._arm(msg)
        self._outgoing.append(msg)
        self._publish_wake.set()

    def _park(self, msg: _Outgoing) -> None:
        if not self._running:
            self._fail(msg, ConnectionClosed("the remote messenger is not running"))
            return
        parked = self._parked
        if self.max_parked <= 0:
            self._fail(msg, NoResponders(f"{msg.kind}/{msg.key}: no owner node reachable"))
            return
        if len(parked) >= self.max_parked:
            _, oldest = parked.popitem(last=False)
            self._fail(
                oldest,
                NoResponders(
                    f"{oldest.kind}/{oldest.key}: no owner node reachable and too many "
                    f"messages waiting for one ({self.max_parked})"
                ),
            )
        msg.state = _PARKED
        msg.cid = next(self._cids)
        parked[msg.cid] = msg
        self.stats.parked += 1
        self._arm(msg)

    def _fail(self, msg: _Outgoing, error: ActorsError) -> None:
        """``msg`` will not be delivered: answer its asker, or count a lost tell."""
        msg.state = _DONE
        if msg.reply_to is None:
            self.stats.dropped += 1
        else:
            call_reply(msg.reply_to, error)

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, msg: _Outgoing) -> None:
        if msg.armed:
            return
        msg.armed = True
        heap = self._heap
        heapq.heappush(heap, (msg.expires, next(self._seq), msg))
        if msg.expires < self._sleeping_until:
            self._sweep_wake.set()
        live = len(self._asks) + len(self._tells) + len(self._parked)
        if len(heap) > 2 * live + 4096:
            self._heap = [item for item in heap if item[2].state != _DONE]
            heapq.heapify(self._heap)

    def sweep(self) -> int:
        """Answer every message whose deadline has passed; returns how many expired.
        (The sweeping task calls it; a test on a virtual clock may call it itself.)"""
        now = self.clock.monotonic()
        heap = self._heap
        expired = 0
        while heap and heap[0][0] <= now:
            msg = heapq.heappop(heap)[2]
            msg.armed = False
            if msg.state != _DONE:
                self._expire(msg)
                expired += 1
        return expired

    def _expire(self, msg: _Outgoing) -> None:
        state = msg.state
        where = f"{msg.kind}/{msg.key}"
        error: ActorsError
        if state == _SENT:
            if msg.reply_to is None:  # a tell kept for resending: forget it
                self._tells.pop(msg.cid, None)
                msg.state = _DONE
                return
            self._asks.pop(msg.cid, None)
            error = AskTimeout(f"{where}: no reply before the deadline")
        elif state == _QUEUED:
            (self._asks if msg.reply_to is not None else self._tells).pop(msg.cid, None)
            error = DeadlineExceeded(f"{where}: the deadline passed before sending")
        else:
            self._parked.pop(msg.cid, None)
            if msg.deadline is None:
                error = NoResponders(
                    f"{where}: no owner node reachable within {self.default_timeout:g}s"
                )
            else:
                error = DeadlineExceeded(f"{where}: the deadline passed with no owner reachable")
        if msg.reply_to is not None:
            self.stats.timeouts += 1
        self._fail(msg, error)

    async def _sweeper(self) -> None:
        """The one deadline task: sleeps until the earliest deadline or a new one."""
        while True:
            self.sweep()
            heap = self._heap
            while heap and heap[0][2].state == _DONE:
                heapq.heappop(heap)[2].armed = False
            self._sleeping_until = heap[0][0] if heap else math.inf
            self._sweep_wake = anyio.Event()
            await self.clock.sleep_until(self._sleeping_until, self._sweep_wake)
            self._sleeping_until = -math.inf

    # -- publishing --------------------------------------------------------------------

    def _enqueue_reply(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        """Queue a reply or status for the publisher; never blocks, never raises."""
        if not self._running or len(self._outgoing) >= self.max_outgoing:
            self.stats.dropped += 1
            return
        self._outgoing.append((subject, payload, headers))
        self._publish_wake.set()

    def _wire_headers(self, msg: _Outgoing, now: float) -> dict[str, str] | None:
        """The headers of one attempt; ``None`` when its deadline has passed."""
        headers = dict(msg.headers) if msg.headers else {}
        headers[H_KIND] = msg.kind
        headers[H_KEY] = msg.key
        headers[H_TAG] = msg.tag
        headers[H_FROM] = self.node_id
        if msg.deadline is not None:
            remaining = msg.deadline - now
            if remaining <= 0:
                return None
            headers[H_TTL] = repr(remaining)
        if msg.reply_to is not None:
            headers[H_ASK] = str(msg.cid)
        return headers

    async def _publisher(self) -> None:
        """The only task that publishes: drains the deque, then sleeps."""
        outgoing = self._outgoing
        stats = self.stats
        prefix = self.subject_prefix
        reply_prefix = self._reply_prefix
        while True:
            while outgoing:
                try:
                    nc = self.transport.client
                except ConnectionClosed as exc:
                    self._fail_queued(exc)
                    break
                item = outgoing.popleft()
                msg: _Outgoing | None = None
                if type(item) is _Outgoing:
                    msg = item
                    if msg.state != _QUEUED:
                        continue  # expired or forgotten while queued
                    headers = self._wire_headers(msg, self.clock.monotonic())
                    if headers is None:
                        self._expire(msg)
                        continue
                    subject = f"{prefix}.{msg.owner}"
                    payload = msg.payload
                    reply = f"{reply_prefix}{msg.cid}"
                    msg.state = _SENT
                else:
                    assert type(item) is tuple
                    subject, payload, headers = item
                    reply = ""
                try:
                    await nc.publish(subject, payload, reply=reply, headers=headers)
                except (nats.errors.Error, OSError) as exc:
                    _log.debug("remote publish failed", subject=subject, error=repr(exc))
                    if msg is not None:
                        self._forget(msg)
                        self._fail(msg, map_error(exc, f"publish {subject}") or ConnectionClosed())
                    else:
                        stats.dropped += 1
                else:
                    if msg is not None:
                        stats.sent += 1
            self._publish_wake = anyio.Event()
            if outgoing:
                continue
            await self._publish_wake.wait()

    def _fail_queued(self, error: ActorsError) -> None:
        """The connection is gone: everything queued fails (replies are dropped)."""
        outgoing = self._outgoing
        while outgoing:
            item = outgoing.popleft()
            if type(item) is _Outgoing:
                if item.state == _QUEUED:
                    self._forget(item)
                    self._fail(item, error)
            else:
                self.stats.dropped += 1

    def _forget(self, msg: _Outgoing) -> None:
        """Remove ``msg`` from the table of messages in flight."""
        (self._asks if msg.reply_to is not None else self._tells).pop(msg.cid, None)

    # -- receiving ---------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        """A message for an actor of this node (no I/O here: the reply is queued)."""
        self.stats.received += 1
        raw = msg.headers or {}
        try:
            kind = raw[H_KIND]
            key = raw[H_KEY]
            tag = raw[H_TAG]
            ttl = raw.get(H_TTL)
            deadline = None if ttl is None else self.clock.monotonic() + float(ttl)
        except (KeyError, ValueError):
            self.stats.dropped += 1
            _log.warning("malformed remote message", subject=msg.subject, headers=raw)
            return
        headers = {name.lower(): value for name, value in raw.items() if name not in HEADERS}
        reply_cb = _RemoteReply(self, msg.reply) if msg.reply and H_ASK in raw else None
        try:
            message = self.codec.decode(tag, msg.data)
        except CodecError as exc:
            _log.warning("remote message not decodable", kind=kind, tag=tag, error=str(exc))
            self._refuse(reply_cb, exc)
            return
        try:
            self._deliver(kind, key, message, reply_cb, headers or None, deadline)
        except NotLocal:
            if reply_cb is not None:
                reply_cb.done = True
            if msg.reply:
                self._enqueue_reply(msg.reply, b"", {H_STATUS: _MOVED})
        except ActorsError as exc:
            self._refuse(reply_cb, exc)
        except Exception as exc:
            _log.exception("delivering a remote message failed", kind=kind, key=key)
            self._refuse(reply_cb, ActorsError(f"{kind}/{key}: delivery failed: {exc!r}"))

    def _refuse(self, reply_cb: _RemoteReply | None, error: ActorsError) -> None:
        if reply_cb is None:
            self.stats.dropped += 1
        else:
            reply_cb(error)

    async def _on_answer(self, msg: Msg) -> None:
        """A reply, a "moved" status or NATS's no-responders status for a message sent."""
        try:
            cid = int(msg.subject[len(self._reply_prefix) :])
        except ValueError:
            return
        headers = msg.headers or {}
        if headers.get(_NATS_STATUS) == _NO_RESPONDERS:
            self._undelivered(cid)
            return
        if headers.get(H_STATUS) == _MOVED:
            self._undelivered(cid)
            return
        sent = self._asks.get(cid)
        if sent is None or sent.state != _SENT or H_TAG not in headers:
            return  # late (answered by its deadline) or not ours
        del self._asks[cid]
        sent.state = _DONE
        try:
            value = self.codec.decode(headers[H_TAG], msg.data)
        except CodecError as exc:
            value = exc
        self.stats.replies += 1
        assert sent.reply_to is not None
        call_reply(sent.reply_to, value)

    def _undelivered(self, cid: int) -> None:
        """Attempt ``cid`` was not handled: follow the owner, or park."""
        msg = self._asks.pop(cid, None)
        if msg is None:
            msg = self._tells.pop(cid, None)
        if msg is None or msg.state != _SENT:
            return
        failed = msg.owner
        msg.attempts += 1
        owner = self._locate(msg.kind, msg.key)
        if owner is not None and owner != failed and msg.attempts <= MAX_HOPS:
            self.stats.retried += 1
            self._route(msg, owner)
        else:
            self._park(msg)

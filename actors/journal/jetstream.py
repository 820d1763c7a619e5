"""The cluster journal: one replicated JetStream stream, checked per actor by the server.

Why JetStream: in cluster mode the owner of a shard can die, and the node that takes the
shard over must find every actor's events, snapshot, idempotency records, durable
deadlines and pending outbox entries where it can read them, replicated. A JetStream
stream with ``replicas=3`` is that place, and the server can enforce the one-writer rule
itself: a message published with ``Nats-Expected-Last-Subject-Sequence: N`` is stored only
if the last message on its subject is stream sequence ``N`` (``0``: there is none). Two
nodes that both believe they own an actor cannot both append; the second is refused
(JetStream error 10071, "wrong last sequence") and gets
:class:`~actors.errors.SequenceConflict`.

Layout: one stream (``stream``, subjects ``<prefix>.>``, file storage, ``replicas``, no
age or size limit, ``discard=new`` so a limit an operator adds later refuses writes
instead of silently dropping history; direct gets, atomic batches and roll-ups on)::

    <prefix>.ev.<kind>.<key>        the actor's records, its whole history
    <prefix>.deadline.<kind>.<key>  the actor's pending deadlines (roll-up: one message)
    <prefix>.outbox.<id>            one committed, not yet acknowledged outbox entry
    <prefix>.dead                   dead letters, each pointing at the one before

Kinds, keys and outbox ids that are not plain tokens (``[A-Za-z0-9_-]+``) are written as
``=`` + base64url, so any string is a valid, unambiguous subject token.

**One record per actor per write.** Everything a write does to an actor (the events of
all its requests in the group, the latest snapshot, new idempotency records, deadline
changes) is ONE msgpack record on ``ev.<kind>.<key>``, published with the expected last
subject sequence of that actor's previous record. One message is atomic by construction
and carries one sequence check, so the rule "a request applies in full or not at all" and
the per-actor optimistic check are the same thing. Requests of one actor that chain in a
group (the runtime pipelines up to four turns) are checked against each other locally and
folded into the one record; a request whose ``expected_seq`` does not follow gets its
:class:`~actors.errors.SequenceConflict` and the others still commit.

**Atomic batches only where a record needs company.** Pending deadlines must be listed
across all actors (``deadlines``) and pending outbox entries across all writes
(``outbox``), which a per-actor record cannot answer without reading every actor. Those
two live in their own subjects, and a record that changes them is published together with
them in one JetStream atomic batch (``Nats-Batch-Id``/``-Sequence``/``-Commit``, server
2.12+): the record, the actor's new deadline set (a roll-up, so the subject holds one
message), and one message per outbox entry. All of it is stored or none of it, so these
indexes are never a crash away from the records: nothing to rebuild, nothing to check.
(The other design, a KV index written after the record, leaves a window in which a crash
keeps a committed deadline out of the index forever.) Records that touch neither go out
as plain publishes: measured on one server, a 50-message atomic batch costs about twice
what 50 pipelined publishes do. All messages of a write are pipelined: one round trip
per write, plus one read first where an actor's head must be learned (a cache miss, or a
conflict to confirm).

**Recovery is O(records since the snapshot).** Each record names the stream sequence of
the actor's previous record and of the latest record that holds a snapshot; a record with
a snapshot also holds the actor's complete idempotency map (the deltas before it are then
never needed). Recovering an actor is one direct get of the last record and the deadline
set together (``multi_last``, one consistent point in the stream), and, when the last
record is neither the first nor a snapshot, one batched direct get of the records from the
snapshot onwards. Many actors are recovered with these requests pipelined in bounded
windows.

**The writer's cache.** To set the expected sequence and to fold deadlines and (for a
snapshot) idempotency records, a write needs the actor's head: the stream sequence of its
last record, its sequence, its deadline set and idempotency map. Heads learned by
``recover`` and ``write`` are kept in a bounded LRU (``cache_actors``). A never-seen
actor written with ``expected_seq == 0`` is assumed new (the server checks it); any other
miss loads the head first. A cached head is never trusted for a refusal: before a
request is declared in conflict, its head is read again from the server, so ``actual``
is the stored value.

Failure cases:

- *The connection drops or times out during a write.* Each actor's unit is atomic, but a
  group is not one transaction here: some units may have committed. The write raises
  :class:`~actors.errors.JournalUnavailable` and forgets the cached heads of the whole
  group; the runtime rebuilds those actors from the journal, which shows exactly what
  committed. Committed outbox entries stay pending and the relay's next drain publishes
  them.
- *Another writer appended to an actor.* Its record (and, in an atomic batch, every unit
  in that batch) is refused; the refused actors' heads are re-read and their requests
  re-planned and sent again (at most ``_MAX_ROUNDS`` rounds, then
  :class:`~actors.errors.JournalUnavailable`).
- *A read answered by a replica a moment behind* (direct gets may be served by any
  replica). A stale head makes the next write refused by the leader's check and re-read,
  never lost; a recovery right after a write on a replicated stream may see the
  actor as it was a few milliseconds before.
- *The node dies between publishing outbox entries and acknowledging them.* They stay on
  their subjects and are published again on the next drain (at least once; the id is the
  ``Nats-Msg-Id`` downstream). ``ack_outbox`` purges each entry's subject.
- *Two nodes add dead letters at once.* Each letter is appended with the expected last
  sequence of the letter before it, and retried when another got there first.
- *No stream answers, or the server is unreachable.* Every operation raises
  :class:`~actors.errors.JournalUnavailable` (retryable); nothing is cached as known.
- *A record larger than the server's ``max_payload``, or one actor's write with more
  outbox entries than an atomic batch holds.* Refused with ``ValueError`` before anything
  of that write round is sent.
- *Someone deletes or purges records by hand.* The chain of ``prev`` and snapshot
  pointers assumes history is only appended to: do not.

Costs: an actor's whole deadline set is rewritten whenever it changes (sets are small);
``deadlines()`` reads every actor's set once and pages the sorted result from memory
until a page comes back empty or a local write changes a deadline; ``dead_letters(limit)``
walks back one direct get per letter; reads pay the NATS client's header parsing (~20 µs
a message).
"""

from __future__ import annotations

import base64
import bisect
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import anyio
import msgspec
import nats.js.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from ..errors import (
    ActorsError,
    JournalUnavailable,
    RequestTimeout,
    SequenceConflict,
    TransportError,
)
from ..nats.errors import mapped_errors
from ..nats.transport import Msg, NatsTransport, Subscription
from ._checks import check_batch
from .base import DeadLetter, Deadline, OutboxEntry, Recovery, WriteRequest

__all__ = ["JetStreamJournal"]

_ActorId = tuple[str, str]

_API = "$JS.API"
_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
_ROLLUP: Final = "Nats-Rollup"
_BATCH_ID: Final = "Nats-Batch-Id"
_BATCH_SEQ: Final = "Nats-Batch-Sequence"
_BATCH_COMMIT: Final = "Nats-Batch-Commit"
_WRONG_LAST_SEQUENCE = 10071
_STREAM_NAME_IN_USE = 10058

_MAX_ROUNDS = 8
"""Write rounds (first try plus re-plans after refusals) before giving up."""
_BATCH_MAX_MSGS = 500
"""Messages per atomic batch (the server allows 1,000)."""
_BATCH_MAX_BYTES = 4 * 1024 * 1024
_READ_BATCH = 256
_READ_BYTES = 512 * 1024
"""Records (and at most these bytes of them) per batched get of one actor's history."""
_READ_WINDOW = 64
"""Direct gets in flight at once (with the above, at most 32 MiB of replies)."""
_TIP_WINDOW = 256
"""Actors whose last record and deadline set are read at once (two messages each)."""
_SCAN_BATCH = 4096
_SCAN_BYTES = 8 * 1024 * 1024
"""Messages and bytes per page of a scan (deadline sets, outbox entries)."""
_HEADROOM = 1024
"""Bytes left under ``max_payload`` for a message's headers."""

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX = re.compile(r"[^.\s*>]+(\.[^.\s*>]+)*")


def _token(text: str) -> str:
    """``text`` as one subject token: itself when plain, else ``=`` + base64url."""
    if _SAFE_TOKEN.fullmatch(text):
        return text
    return "=" + base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


# -- stored shapes --------------------------------------------------------------------


class _Record(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """What one write did to one actor (see the module docstring)."""

    seq: int
    """The actor's sequence after this record; its events end here."""
    prev: int = 0
    """Stream sequence of the actor's previous record (0: this is the first)."""
    checkpoint: int = 0
    """Stream sequence of the latest EARLIER record holding a snapshot (0: none)."""
    events: list[bytes] = []
    snapshot: bytes | None = None
    snapshot_seq: int = 0
    idempotency: list[tuple[str, bytes]] = []
    """Records new in this write (ids already stored are left out: first reply wins)."""
    idempotency_all: dict[str, bytes] | None = None
    """With a snapshot: every record of the actor up to here, so recovery starts here."""
    deadlines_set: list[tuple[str, float, bytes]] = []
    deadlines_cancel: list[str] = []


class _DeadlineSet(msgspec.Struct, frozen=True, array_like=True):
    """An actor's pending deadlines, complete (the subject rolls up to the latest)."""

    kind: str
    key: str
    items: list[tuple[str, float, bytes]]


class _Dead(msgspec.Struct, frozen=True, array_like=True):
    prev: int
    letter: DeadLetter


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    """A publish ack, batch commit ack or purge response (only what we read)."""

    seq: int = 0
    count: int = 0
    error: _ApiError | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(_Record).decode
_decode_deadlines = msgspec.msgpack.Decoder(_DeadlineSet).decode
_decode_outbox = msgspec.msgpack.Decoder(OutboxEntry).decode
_decode_dead = msgspec.msgpack.Decoder(_Dead).decode
_decode_ack = msgspec.json.Decoder(_Ack).decode
_json = msgspec.json.encode


class _Head:
    """What a writer must know of an actor: its last record and the state it folds."""

    __slots__ = ("checkpoint", "deadlines", "idempotency", "seq", "stream_seq")

    def __init__(
        self,
        stream_seq: int = 0,
        seq: int = 0,
        checkpoint: int = 0,
        deadlines: dict[str, Deadline] | None = None,
        idempotency: dict[str, bytes] | None = None,
    ) -> None:
        self.stream_seq = stream_seq
        self.seq = seq
        self.checkpoint = checkpoint
        """Stream sequence of the latest record with a snapshot, this one included."""
        self.deadlines: dict[str, Deadline] = deadlines if deadlines is not None else {}
        self.idempotency: dict[str, bytes] = idempotency if idempotency is not None else {}


class _Plan:
    """One actor's share of a write round: its record and what goes with it."""

    __slots__ = ("deadlines", "expected", "head", "ident", "outbox", "record", "snapshot")

    def __init__(
        self,
        ident: _ActorId,
        expected: int,
        record: bytes,
        deadlines: bytes | None,
        outbox: list[tuple[int, OutboxEntry]],
        head: _Head,
        snapshot: bool,
    ) -> None:
        self.ident = ident
        self.expected = expected
        """Stream sequence of the actor's last record (0: none), for the server's check."""
        self.record = record
        self.deadlines = deadlines
        self.outbox = outbox
        self.head = head
        """The head after this record; ``stream_seq`` is set once it is stored."""
        self.snapshot = snapshot


def _plan(
    ident: _ActorId, indices: list[int], requests: list[WriteRequest], head: _Head
) -> tuple[_Plan | None, list[tuple[int, int]]]:
    """Check one actor's chain of requests against ``head`` and fold the accepted ones
    into one record. Returns the plan (``None`` when nothing is accepted) and the
    refused requests as ``(index, actual sequence)``."""
    seq = head.seq
    conflicts: list[tuple[int, int]] = []
    accepted = False
    events: list[bytes] = []
    snapshot: bytes | None = None
    snapshot_seq = 0
    deadlines = head.deadlines
    new_ids: dict[str, bytes] = {}
    outbox: list[tuple[int, OutboxEntry]] = []
    for index in indices:
        req = requests[index]
        if req.expected_seq != seq:
            conflicts.append((index, seq))
            continue
        accepted = True
        if req.events:
            events.extend(req.events)
            seq += len(req.events)
        if req.snapshot is not None:
            snapshot, snapshot_seq = req.snapshot, seq
        if req.deadlines_cancel or req.deadlines_set:
            if deadlines is head.deadlines:
                deadlines = dict(deadlines)
            for name in req.deadlines_cancel:  # cancellations first, as in every journal
                deadlines.pop(name, None)
            for d in req.deadlines_set:
                deadlines[d.name] = d
        for request_id, reply in req.idempotency:
            if request_id not in head.idempotency and request_id not in new_ids:
                new_ids[request_id] = reply
        outbox.extend((index, entry) for entry in req.outbox)
    if not accepted:
        return None, conflicts
    changed = [d for name, d in deadlines.items() if head.deadlines.get(name) != d]
    cancelled = [name for name in head.deadlines if name not in deadlines]
    idempotency = head.idempotency
    if new_ids:
        idempotency = {**head.idempotency, **new_ids}
    record = _Record(
        seq=seq,
        prev=head.stream_seq,
        checkpoint=head.checkpoint,
        events=events,
        snapshot=snapshot,
        snapshot_seq=snapshot_seq,
        idempotency=list(new_ids.items()),
        idempotency_all=idempotency if snapshot is not None else None,
        deadlines_set=[(d.name, d.due, d.payload) for d in changed],
        deadlines_cancel=cancelled,
    )
    deadline_set = None
    if changed or cancelled:
        items = [(d.name, d.due, d.payload) for d in deadlines.values()]
        deadline_set = _encode(_DeadlineSet(ident[0], ident[1], items))
    after = _Head(0, seq, head.checkpoint, deadlines, idempotency)
    plan = _Plan(
        ident,
        head.stream_seq,
        _encode(record),
        deadline_set,
        outbox,
        after,
        snapshot is not None,
    )
    return plan, conflicts


# -- pipelined requests on one inbox ------------------------------------------------------

_NO_REPLY = 0
_ONE_REPLY = 1
_REPLIES = 2
"""Reply modes: none, one message, or messages up to a status message (batched gets)."""


class _Out:
    __slots__ = ("headers", "mode", "payload", "subject")

    def __init__(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, mode: int
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.mode = mode


class _Window:
    __slots__ = ("done", "final", "modes", "pending", "replies")

    def __init__(self, modes: list[int]) -> None:
        self.modes = modes
        self.replies: list[list[Msg]] = [[] for _ in modes]
        self.final = bytearray(len(modes))
        self.pending = sum(1 for m in modes if m != _NO_REPLY)
        self.done = anyio.Event()
        if self.pending == 0:
            self.done.set()


def _status(msg: Msg) -> str | None:
    headers = msg.headers
    if not headers:
        return None
    status: str | None = headers.get("Status")
    return status


class _Inbox:
    """Requests sent back to back, their replies routed to them under one wildcard
    subscription: a window of requests costs one round trip, not one each."""

    def __init__(self, transport: NatsTransport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        self._sub_client: object = None
        self._windows: dict[str, _Window] = {}
        self._next = 0
        self._subscribing = anyio.Lock()

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._sub_client = None
        if sub is not None:
            try:
                await self.transport.unsubscribe(sub, drain=False)
            except TransportError:
                pass  # the connection is gone: so is the subscription

    async def _ensure(self) -> str:
        async with self._subscribing:  # one subscription, however many callers race
            return await self._subscribe()

    async def _subscribe(self) -> str:
        client = self.transport.client
        if self._sub is None or self._sub_client is not client:
            prefix = self.transport.new_inbox()
            # Room for the largest windows the journal sends (see _READ_WINDOW); beyond
            # it nats-py would drop replies and the window would time out.
            self._sub = await self.transport.subscribe(
                f"{prefix}.>",
                self._on_reply,
                pending_msgs_limit=262_144,
                pending_bytes_limit=256 * 1024 * 1024,
            )
            self._prefix = prefix
            self._sub_client = client
        return self._prefix

    async def exchange(self, outs: Sequence[_Out], window: int) -> list[list[Msg]]:
        """Send every message in order, ``window`` at a time, and return each one's
        replies (empty for ``_NO_REPLY``). Raises
        :class:`~actors.errors.TransportError` (a timeout is a
        :class:`~actors.errors.RequestTimeout`)."""
        replies: list[list[Msg]] = []
        for start in range(0, len(outs), window):
            replies.extend(await self._exchange(outs[start : start + window]))
        return replies

    async def _exchange(self, outs: Sequence[_Out]) -> list[list[Msg]]:
        prefix = await self._ensure()
        nc = self.transport.client
        self._next += 1
        window_id = str(self._next)
        win = _Window([o.mode for o in outs])
        self._windows[window_id] = win
        reply_prefix = f"{prefix}.{window_id}."
        try:
            with anyio.fail_after(self.timeout), mapped_errors("jetstream journal"):
                for i, out in enumerate(outs):
                    await nc.publish(
                        out.subject,
                        out.payload,
                        reply=reply_prefix + str(i) if out.mode != _NO_REPLY else "",
                        headers=out.headers,
                    )
                await win.done.wait()
        except TimeoutError as exc:
            if isinstance(exc, ActorsError):
                raise
            raise RequestTimeout(
                f"{win.pending} of {len(outs)} replies missing after {self.timeout:g}s"
            ) from exc
        finally:
            del self._windows[window_id]
        return win.replies

    async def _on_reply(self, msg: Msg) -> None:
        _, window_id, index_text = msg.subject.rsplit(".", 2)
        win = self._windows.get(window_id)
        if win is None:
            return  # a late reply to an abandoned window
        try:
            index = int(index_text)
            if win.final[index]:
                return
            mode = win.modes[index]
        except (ValueError, IndexError):
            return
        win.replies[index].append(msg)
        if mode == _ONE_REPLY or _status(msg) is not None:
            win.final[index] = 1
            win.pending -= 1
            if win.pending == 0:
                win.done.set()


@contextmanager
def _store(what: str) -> Iterator[None]:
    """Lower-layer failures of a journal operation as
    :class:`~actors.errors.JournalUnavailable`."""
    try:
        with mapped_errors(what):
            yield
    except TransportError as exc:
        raise JournalUnavailable(f"jetstream journal: {what}: {exc}") from exc


def _ack(msg: Msg, what: str) -> _Ack:
    """The ack in ``msg``; a missing stream or unreadable ack is a store failure."""
    if _status(msg) == "503":
        raise JournalUnavailable(f"jetstream journal: {what}: no stream answers")
    try:
        return _decode_ack(msg.data)
    except msgspec.DecodeError as exc:
        raise JournalUnavailable(f"jetstream journal: {what}: unreadable ack") from exc


def _refused(ack: _Ack, what: str) -> bool:
    """Whether the ack refuses on the sequence check; other errors raise."""
    if ack.error is None:
        return False
    if ack.error.err_code == _WRONG_LAST_SEQUENCE:
        return True
    raise JournalUnavailable(
        f"jetstream journal: {what}: {ack.error.description} (err_code {ack.error.err_code})"
    )


def _header(msg: Msg, name: str, default: str = "") -> str:
    headers = msg.headers
    return headers.get(name, default) if headers else default


def _seq_of(msg: Msg) -> int:
    return int(_header(msg, "Nats-Sequence", "0"))


def _check_get(msgs: list[Msg], what: str) -> list[Msg]:
    """The stored messages of a direct get; "not found" is no messages, other statuses
    are failures."""
    found: list[Msg] = []
    for msg in msgs:
        status = _status(msg)
        if status is None:
            found.append(msg)
        elif status not in ("204", "404"):
            description = _header(msg, "Description")
            raise JournalUnavailable(f"jetstream journal: {what}: status {status} {description}")
    return found


def _pending_after(msgs: list[Msg]) -> int:
    """``Nats-Num-Pending`` of a batched get's end marker: matches left after it."""
    if msgs and _status(msgs[-1]) == "204":
        return int(_header(msgs[-1], "Nats-Num-Pending", "0"))
    return 0


# -- the journal ----------------------------------------------------------------------


class JetStreamJournal:
    """A :class:`~actors.journal.base.Journal` in one JetStream stream.

    ``transport`` must be connected; the journal uses it and never closes it. ``open``
    creates the stream when it is missing (``replicas`` copies, file storage) and turns
    on the features it needs on an existing one; it never changes anything else of an
    existing stream. ``prefix`` roots every subject (``<prefix>.>``) and must not overlap
    another stream's subjects."""

    def __init__(
        self,
        transport: NatsTransport,
        *,
        stream: str = "JOURNAL",
        prefix: str = "journal",
        replicas: int = 1,
        timeout: float = 10.0,
        max_in_flight: int = 4096,
        cache_actors: int = 100_000,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} is not a subject without wildcards")
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.transport = transport
        self.stream = stream
        self.prefix = prefix
        self.replicas = replicas
        self.timeout = timeout
        self.max_in_flight = max(2, max_in_flight)
        self.cache_actors = max(0, cache_actors)
        self.records_read = 0
        """Records fetched by recovery (each actor's last one included)."""
        self._inbox = _Inbox(transport, timeout)
        self._open = False
        self._heads: OrderedDict[_ActorId, _Head] = OrderedDict()
        self._direct_get = f"{_API}.DIRECT.GET.{stream}"
        self._purge = f"{_API}.STREAM.PURGE.{stream}"
        self._dead_subject = f"{prefix}.dead"
        self._dead_last: int | None = None
        self._outbox_from = 1
        # deadlines(): the sorted scan being paged, valid until the next local change.
        self._generation = 0
        self._paging: tuple[int, list[tuple[float, str, str, str]], list[Deadline]] | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._open:
            return
        js = self.transport.jetstream(timeout=self.timeout)
        with _store(f"stream {self.stream}"):
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                info = None
            if info is None:
                try:
                    await js.add_stream(self._stream_config())
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != _STREAM_NAME_IN_USE:
                        raise
                    info = await js.stream_info(self.stream)  # another node was first
            if info is not None:
                await self._adopt(js, info.config)
        self._open = True

    def _stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            description="actors journal",
            subjects=[f"{self.prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            max_msgs=-1,
            max_bytes=-1,
            max_age=0,
            discard=DiscardPolicy.NEW,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            allow_direct=True,
            allow_atomic=True,
            allow_rollup_hdrs=True,
        )

    async def _adopt(self, js: Any, config: StreamConfig) -> None:
        """Use an existing stream: it must capture our subjects; the features the
        journal relies on are switched on (nothing else is changed)."""
        subjects = config.subjects or []
        if f"{self.prefix}.>" not in subjects:
            raise JournalUnavailable(
                f"stream {self.stream} captures {subjects}, not {self.prefix}.>"
            )
        if config.allow_direct and config.allow_atomic and config.allow_rollup_hdrs:
            return
        config.allow_direct = True
        config.allow_atomic = True
        config.allow_rollup_hdrs = True
        await js.update_stream(config)

    async def close(self) -> None:
        self._open = False
        self._heads.clear()
        self._paging = None
        self._dead_last = None
        self._outbox_from = 1
        with anyio.CancelScope(shield=True):
            await self._inbox.close()

    def _ensure_open(self) -> None:
        if not self._open:
            raise JournalUnavailable("journal is not open")

    # -- subjects ---------------------------------------------------------------------

    def _ev(self, ident: _ActorId) -> str:
        return f"{self.prefix}.ev.{_token(ident[0])}.{_token(ident[1])}"

    def _deadline_subject(self, ident: _ActorId) -> str:
        return f"{self.prefix}.deadline.{_token(ident[0])}.{_token(ident[1])}"

    def _outbox_subject(self, entry_id: str) -> str:
        return f"{self.prefix}.outbox.{_token(entry_id)}"

    # -- the head cache ---------------------------------------------------------------

    def _cached(self, ident: _ActorId) -> _Head | None:
        head = self._heads.get(ident)
        if head is not None:
            self._heads.move_to_end(ident)
        return head

    def _remember(self, ident: _ActorId, head: _Head) -> None:
        if self.cache_actors == 0:
            return
        known = self._heads.get(ident)
        if known is not None and known.stream_seq > head.stream_seq:
            return  # a concurrent write already knows better
        self._heads[ident] = head
        self._heads.move_to_end(ident)
        while len(self._heads) > self.cache_actors:
            self._heads.popitem(last=False)

    # -- writes -----------------------------------------------------------------------

    async def write(self, batch: Sequence[WriteRequest]) -> list[SequenceConflict | None]:
        check_batch(batch)
        self._ensure_open()
        if not batch:
            return []
        requests = list(batch)
        chains: dict[_ActorId, list[int]] = {}
        for i, req in enumerate(requests):
            chains.setdefault((req.kind, req.key), []).append(i)
        results: list[SequenceConflict | None] = [None] * len(requests)
        heads: dict[_ActorId, _Head] = {}
        fresh: set[_ActorId] = set()
        missing: list[_ActorId] = []
        for ident, indices in chains.items():
            head = self._cached(ident)
            if head is not None:
                heads[ident] = head
            elif requests[indices[0]].expected_seq == 0:
                heads[ident] = _Head()  # assumed new; the server's check decides
            else:
                missing.append(ident)
        done = False
        try:
            if missing:
                await self._refresh(missing, heads, fresh)
            todo = list(chains)
            for _ in range(_MAX_ROUNDS):
                # A refusal is only reported against a head read from the server.
                doubtful = [
                    ident
                    for ident in todo
                    if ident not in fresh
                    and requests[chains[ident][0]].expected_seq != heads[ident].seq
                ]
                if doubtful:
                    await self._refresh(doubtful, heads, fresh)
                plans: list[_Plan] = []
                for ident in todo:
                    plan, conflicts = _plan(ident, chains[ident], requests, heads[ident])
                    for index in chains[ident]:
                        results[index] = None
                    for index, actual in conflicts:
                        req = requests[index]
                        results[index] = SequenceConflict(
                            req.kind, req.key, req.expected_seq, actual
                        )
                    if plan is not None:
                        plans.append(plan)
                if not plans:
                    break
                refused = await self._publish(plans)
                if not refused:
                    break
                await self._refresh(refused, heads, fresh)
                todo = refused
            else:
                raise JournalUnavailable(
                    f"jetstream journal: writes kept being refused after {_MAX_ROUNDS} "
                    "rounds (other writers on the same actors)"
                )
            done = True
        finally:
            if not done:  # the outcome is unknown: learn it again from the stream
                for ident in chains:
                    self._heads.pop(ident, None)
        return results

    async def _refresh(
        self, idents: list[_ActorId], heads: dict[_ActorId, _Head], fresh: set[_ActorId]
    ) -> None:
        loaded = await self._load(idents)
        for ident in idents:
            heads[ident] = loaded[ident][0]
            fresh.add(ident)

    async def _publish(self, plans: list[_Plan]) -> list[_ActorId]:
        """Store every plan; returns the actors refused by the sequence check (their
        heads to be re-read). Plans that stored update the head cache."""
        limit = self.transport.max_payload - _HEADROOM
        outs: list[_Out] = []
        # One entry per unit: (plans, index of its ack in outs, index of the first
        # reply of a batch or -1, each plan's record position in the batch).
        units: list[tuple[list[_Plan], int, int, list[int]]] = []
        plain = [p for p in plans if p.deadlines is None and not p.outbox]
        company = [p for p in plans if p.deadlines is not None or p.outbox]
        for plan in plain:
            self._check_size(plan.record, limit)
            headers = {_EXPECTED_LAST_SUBJECT_SEQ: str(plan.expected)}
            units.append(([plan], len(outs), -1, [0]))
            outs.append(_Out(self._ev(plan.ident), plan.record, headers, _ONE_REPLY))
        for group in self._pack(company, limit):
            messages: list[tuple[str, bytes, dict[str, str]]] = []
            positions: list[int] = []
            for plan in group:
                positions.append(len(messages))
                expected = {_EXPECTED_LAST_SUBJECT_SEQ: str(plan.expected)}
                messages.append((self._ev(plan.ident), plan.record, expected))
                if plan.deadlines is not None:
                    subject = self._deadline_subject(plan.ident)
                    messages.append((subject, plan.deadlines, {_ROLLUP: "sub"}))
            entries = sorted((e for plan in group for e in plan.outbox), key=lambda e: e[0])
            for _, entry in entries:
                messages.append((self._outbox_subject(entry.id), _encode(entry), {}))
            batch_id = uuid.uuid4().hex
            first = len(outs)
            last = len(messages)
            for n, (subject, payload, headers) in enumerate(messages, 1):
                headers = {**headers, _BATCH_ID: batch_id, _BATCH_SEQ: str(n)}
                if n == last:
                    headers[_BATCH_COMMIT] = "1"
                mode = _ONE_REPLY if n in (1, last) else _NO_REPLY
                outs.append(_Out(subject, payload, headers, mode))
            units.append((group, len(outs) - 1, first, positions))
        with _store("write"):
            replies = await self._inbox.exchange(outs, self.max_in_flight)
        refused: list[_ActorId] = []
        for group, ack_at, first_at, positions in units:
            if first_at >= 0:  # a batch: its start may be refused on its own
                start = replies[first_at]
                if start and start[0].data:
                    _refused(_ack(start[0], "atomic batch"), "atomic batch")
            ack = _ack(replies[ack_at][0], "write")
            if _refused(ack, "write"):
                refused.extend(plan.ident for plan in group)
                continue
            size = ack_at - first_at + 1 if first_at >= 0 else 1
            if first_at >= 0 and ack.count != size:
                raise JournalUnavailable(
                    f"jetstream journal: batch of {size} stored {ack.count} messages"
                )
            base = ack.seq - size + 1
            for plan, position in zip(group, positions, strict=True):
                head = plan.head
                head.stream_seq = base + position
                if plan.snapshot:
                    head.checkpoint = head.stream_seq
                self._remember(plan.ident, head)
            if any(plan.deadlines is not None for plan in group):
                self._generation += 1
        return refused

    @staticmethod
    def _check_size(payload: bytes, limit: int) -> None:
        if len(payload) > limit:
            raise ValueError(
                f"a journal record of {len(payload)} bytes exceeds the server's message "
                f"limit ({limit} bytes after headers)"
            )

    def _pack(self, plans: list[_Plan], limit: int) -> Iterator[list[_Plan]]:
        """Split the plans that need an atomic batch into batches within the server's
        limits; one actor's messages always share a batch."""
        group: list[_Plan] = []
        count = size = 0
        for plan in plans:
            msgs = 1 + (plan.deadlines is not None) + len(plan.outbox)
            nbytes = len(plan.record) + len(plan.deadlines or b"")
            self._check_size(plan.record, limit)
            self._check_size(plan.deadlines or b"", limit)
            for _, entry in plan.outbox:
                entry_size = len(entry.payload) + len(entry.subject) + len(entry.id) + 64
                if entry_size > limit:
                    raise ValueError(f"outbox entry {entry.id!r} exceeds the message limit")
                nbytes += entry_size
            if msgs > _BATCH_MAX_MSGS:
                raise ValueError(
                    f"{plan.ident[0]}/{plan.ident[1]}: {msgs} messages in one write "
                    f"exceed an atomic batch ({_BATCH_MAX_MSGS})"
                )
            if group and (count + msgs > _BATCH_MAX_MSGS or size + nbytes > _BATCH_MAX_BYTES):
                yield group
                group, count, size = [], 0, 0
            group.append(plan)
            count += msgs
            size += nbytes
        if group:
            yield group

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        self._ensure_open()
        subjects = list(dict.fromkeys(self._outbox_subject(i) for i in ids))
        if not subjects:
            return
        outs = [_Out(self._purge, _json({"filter": s}), None, _ONE_REPLY) for s in subjects]
        with _store("ack outbox"):
            replies = await self._inbox.exchange(outs, self.max_in_flight)
        for reply in replies:
            ack = _ack(reply[0], "ack outbox")
            if ack.error is not None:
                raise JournalUnavailable(f"jetstream journal: ack outbox: {ack.error.description}")

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        self._ensure_open()
        for _ in range(_MAX_ROUNDS):
            last = self._dead_last
            if last is None:
                last = await self._last_seq(self._dead_subject)
            body = _encode(_Dead(last, letter))
            headers = {_EXPECTED_LAST_SUBJECT_SEQ: str(last)}
            with _store("dead letter"):
                [reply] = await self._inbox.exchange(
                    [_Out(self._dead_subject, body, headers, _ONE_REPLY)], 1
                )
            ack = _ack(reply[0], "dead letter")
            if not _refused(ack, "dead letter"):
                self._dead_last = ack.seq
                return
            self._dead_last = None  # another writer added one: read the last again
        raise JournalUnavailable("jetstream journal: dead letter refused too often")

    # -- reads ------------------------------------------------------------------------

    async def _get(
        self, requests: list[dict[str, Any]], what: str, window: int = _READ_WINDOW
    ) -> list[tuple[list[Msg], bool]]:
        """Direct gets, pipelined. For each: the stored messages, and whether more match
        after them. A batched get (``batch``, ``multi_last``) answers with messages up to
        an end marker (at most ``max_bytes`` of them), a plain one with one message."""
        outs = [
            _Out(
                self._direct_get,
                _json(r),
                None,
                _REPLIES if "batch" in r or "multi_last" in r else _ONE_REPLY,
            )
            for r in requests
        ]
        with _store(what):
            replies = await self._inbox.exchange(outs, window)
        return [(_check_get(msgs, what), _pending_after(msgs) > 0) for msgs in replies]

    async def _scan(
        self, subject: str, position: int, what: str, batch: int = _SCAN_BATCH
    ) -> tuple[list[Msg], bool]:
        """One page of the messages on ``subject`` from stream sequence ``position``."""
        request = {
            "seq": position,
            "next_by_subj": subject,
            "batch": batch,
            "max_bytes": _SCAN_BYTES,
        }
        [page] = await self._get([request], what)
        return page

    async def _last_seq(self, subject: str) -> int:
        [(found, _)] = await self._get([{"last_by_subj": subject}], "last message")
        return _seq_of(found[0]) if found else 0

    async def recover(self, ids: Sequence[tuple[str, str]]) -> list[Recovery]:
        self._ensure_open()
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        loaded = await self._load(wanted)
        return [loaded[ident][1] for ident in ids]

    async def _load(self, idents: list[_ActorId]) -> dict[_ActorId, tuple[_Head, Recovery]]:
        """Read each actor's last record and deadline set, then the records since its
        snapshot where the last record alone does not tell everything."""
        tips = await self._get(
            [{"multi_last": [self._ev(i), self._deadline_subject(i)], "batch": 2} for i in idents],
            "recover",
            _TIP_WINDOW,
        )
        lasts: dict[_ActorId, tuple[int, _Record]] = {}
        deadline_sets: dict[_ActorId, _DeadlineSet] = {}
        for ident, (msgs, _) in zip(idents, tips, strict=True):
            ev = self._ev(ident)
            for msg in msgs:
                if _header(msg, "Nats-Subject") == ev:
                    lasts[ident] = (_seq_of(msg), _decode_record(msg.data))
                else:
                    deadline_sets[ident] = _decode_deadlines(msg.data)
        self.records_read += len(lasts)
        history = await self._history(lasts)
        out: dict[_ActorId, tuple[_Head, Recovery]] = {}
        for ident in idents:
            deadline_set = deadline_sets.get(ident)
            deadlines = {
                name: Deadline(ident[0], ident[1], name, due, payload)
                for name, due, payload in (deadline_set.items if deadline_set else [])
            }
            last = lasts.get(ident)
            if last is None:
                head = _Head(deadlines=deadlines)
                out[ident] = (head, Recovery(ident[0], ident[1], deadlines=_ordered(deadlines)))
                self._remember(ident, head)
                continue
            out[ident] = self._fold(ident, last, history.get(ident, []), deadlines)
            self._remember(ident, out[ident][0])
        return out

    async def _history(
        self, lasts: dict[_ActorId, tuple[int, _Record]]
    ) -> dict[_ActorId, list[_Record]]:
        """The records from each actor's snapshot (or first record) up to, not
        including, its last one; only for actors whose last record needs them."""
        todo: dict[_ActorId, int] = {}  # next stream sequence to read from
        for ident, (_, record) in lasts.items():
            if record.snapshot is None and record.prev != 0:
                todo[ident] = record.checkpoint or 1
        found: dict[_ActorId, list[_Record]] = {ident: [] for ident in todo}
        while todo:
            idents = list(todo)
            pages = await self._get(
                [
                    {
                        "seq": todo[i],
                        "next_by_subj": self._ev(i),
                        "batch": _READ_BATCH,
                        "max_bytes": _READ_BYTES,
                    }
                    for i in idents
                ],
                "recover history",
            )
            for ident, (msgs, more) in zip(idents, pages, strict=True):
                end = lasts[ident][0]
                records = found[ident]
                for msg in msgs:
                    seq = _seq_of(msg)
                    if seq >= end:
                        more = False
                        break
                    records.append(_decode_record(msg.data))
                    self.records_read += 1
                    todo[ident] = seq + 1
                if not (more and msgs):
                    del todo[ident]
        return found

    @staticmethod
    def _fold(
        ident: _ActorId,
        last: tuple[int, _Record],
        before: list[_Record],
        deadlines: dict[str, Deadline],
    ) -> tuple[_Head, Recovery]:
        stream_seq, last_record = last
        snapshot: bytes | None = None
        snapshot_seq = 0
        idempotency: dict[str, bytes] = {}
        events: list[bytes] = []
        for record in [*before, last_record]:
            if record.snapshot is not None:
                snapshot, snapshot_seq = record.snapshot, record.snapshot_seq
                idempotency = dict(record.idempotency_all or {})
                first = record.seq - len(record.events) + 1
                events = record.events[max(0, snapshot_seq + 1 - first) :]
                continue
            for request_id, reply in record.idempotency:
                idempotency.setdefault(request_id, reply)
            events.extend(record.events)
        checkpoint = stream_seq if last_record.snapshot is not None else last_record.checkpoint
        head = _Head(stream_seq, last_record.seq, checkpoint, deadlines, idempotency)
        recovery = Recovery(
            kind=ident[0],
            key=ident[1],
            seq=last_record.seq,
            snapshot=snapshot,
            snapshot_seq=snapshot_seq,
            events=events,
            idempotency=dict(idempotency),
            deadlines=_ordered(deadlines),
        )
        return head, recovery

    async def deadlines(
        self, after: tuple[float, str, str, str] | None = None, limit: int = 10_000
    ) -> list[Deadline]:
        self._ensure_open()
        scan = self._paging
        if after is None or scan is None or scan[0] != self._generation:
            scan = self._paging = (self._generation, *await self._scan_deadlines())
        _, keys, every = scan
        start = bisect.bisect_right(keys, after) if after is not None else 0
        page = every[start : start + limit]
        if not page:
            self._paging = None  # the caller has seen them all: let the scan go
        return page

    async def _scan_deadlines(self) -> tuple[list[tuple[float, str, str, str]], list[Deadline]]:
        latest: dict[str, _DeadlineSet] = {}
        position = 1
        subject = f"{self.prefix}.deadline.>"
        while True:
            found, more = await self._scan(subject, position, "deadlines")
            for msg in found:
                # A set rolled up while we read can show twice: the later one wins.
                latest[_header(msg, "Nats-Subject")] = _decode_deadlines(msg.data)
            if not (more and found):
                break
            position = _seq_of(found[-1]) + 1
        every = [
            Deadline(s.kind, s.key, name, due, payload)
            for s in latest.values()
            for name, due, payload in s.items
        ]
        every.sort(key=lambda d: (d.due, d.kind, d.key, d.name))
        return [(d.due, d.kind, d.key, d.name) for d in every], every

    async def outbox(self, limit: int = 1000) -> list[OutboxEntry]:
        self._ensure_open()
        pending: dict[str, OutboxEntry] = {}
        position = self._outbox_from
        subject = f"{self.prefix}.outbox.>"
        first: int | None = None
        while len(pending) < limit:
            found, more = await self._scan(subject, position, "outbox", limit)
            for msg in found:
                if first is None:
                    first = _seq_of(msg)
                entry = _decode_outbox(msg.data)
                if entry.id not in pending:  # a later entry with the same id waits
                    pending[entry.id] = entry
                    if len(pending) == limit:
                        break
            if not (more and found):
                break
            position = _seq_of(found[-1]) + 1
        if first is not None:
            self._outbox_from = first  # nothing pending before it: start there next time
        return list(pending.values())

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._ensure_open()
        letters: list[DeadLetter] = []
        seq = await self._last_seq(self._dead_subject)
        while seq and len(letters) < limit:
            [(found, _)] = await self._get([{"seq": seq}], "dead letters")
            if not found:
                break
            dead = _decode_dead(found[0].data)
            letters.append(msgspec.structs.replace(dead.letter, id=seq))
            seq = dead.prev
        return letters


def _ordered(deadlines: dict[str, Deadline]) -> list[Deadline]:
    return sorted(deadlines.values(), key=lambda d: (d.due, d.name))

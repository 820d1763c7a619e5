"""Outbox sinks on NATS: where committed outbox entries are published.

:class:`JetStreamOutbox` stores entries in a JetStream stream. Each message carries
``Nats-Msg-Id`` = the entry's id, so when the relay publishes a batch again after a crash
or a failed ack, the stream drops the copies it already has (within the stream's
``duplicate_window``): delivery downstream is at least once and storage exactly once.

Publishing is pipelined: a window of up to ``max_in_flight`` entries goes out back to
back, each with a reply subject under one inbox subscription of this sink, and only then
are the acks awaited, an order of magnitude faster than awaiting each ack in turn.
(nats-py's ``publish_async`` is not used: an error ack from the server, such as a
wrong expected stream, never resolves its future, so a refusal would look like a
timeout.) :meth:`JetStreamOutbox.publish` returns only when every entry was acknowledged
and raises :class:`~actors.errors.TransportError` otherwise, so the relay keeps the batch
and retries it.

:class:`CorePublisher` publishes with core NATS (no storage, no acks; a flush makes sure
the server received the batch). It is for tests and benchmarks that need no stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import msgspec
import nats.js.errors
from nats.js.api import StorageType

from ..errors import ActorsError, NoResponders, RequestTimeout, TransportError
from ..journal.base import OutboxEntry
from .errors import mapped_errors
from .transport import Msg, NatsTransport, Subscription

__all__ = ["MSG_ID", "CorePublisher", "JetStreamOutbox"]

MSG_ID = "Nats-Msg-Id"
"""The header JetStream de-duplicates on."""

_EXPECTED_STREAM = "Nats-Expected-Stream"
_STREAM_NAME_IN_USE = 10058


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class _Window:
    """The acks one window of entries is waiting for."""

    __slots__ = ("acked", "done", "duplicates", "entries", "error", "pending")

    def __init__(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries = entries
        self.acked = bytearray(len(entries))
        self.pending = len(entries)
        self.duplicates = 0
        self.error: TransportError | None = None
        self.done = anyio.Event()


class JetStreamOutbox:
    """An :class:`~actors.outbox.OutboxSink` that stores entries in JetStream.

    ``stream``, when given, is sent as ``Nats-Expected-Stream`` so an entry whose subject
    some other stream captures is refused rather than stored in the wrong place.
    ``timeout`` bounds each window of ``max_in_flight`` entries, from first send to last
    ack."""

    def __init__(
        self,
        transport: NatsTransport,
        *,
        stream: str | None = None,
        timeout: float = 10.0,
        max_in_flight: int = 4096,
    ) -> None:
        self.transport = transport
        self.stream = stream
        self.timeout = timeout
        self.max_in_flight = max(1, max_in_flight)
        self.published = 0
        """Entries acknowledged by the stream (duplicates included)."""
        self.duplicates = 0
        """Entries the stream reported as already stored."""
        self._windows: dict[str, _Window] = {}
        self._next_window = 0
        self._inbox = ""
        self._sub: Subscription | None = None
        self._sub_client: object = None

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        replicas: int = 1,
        memory: bool = False,
        duplicate_window: float = 120.0,
        max_age: float | None = None,
    ) -> bool:
        """Create stream ``name`` over ``subjects`` when it is missing; an existing stream
        is left exactly as it is. Returns whether this call created it."""
        js = self.transport.jetstream(timeout=self.timeout)
        with mapped_errors(f"stream {name}"):
            try:
                await js.stream_info(name)
                return False
            except nats.js.errors.NotFoundError:
                pass
            try:
                await js.add_stream(
                    name=name,
                    subjects=list(subjects),
                    num_replicas=replicas,
                    storage=StorageType.MEMORY if memory else StorageType.FILE,
                    duplicate_window=duplicate_window,
                    max_age=max_age,
                )
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                return False  # another node created it meanwhile
            return True

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Store every entry (de-duplicated by id) or raise
        :class:`~actors.errors.TransportError`: :class:`~actors.errors.NoResponders`
        when no stream captures an entry's subject, :class:`~actors.errors.RequestTimeout`
        when acks do not come in time."""
        step = self.max_in_flight
        for start in range(0, len(entries), step):
            await self._publish_window(entries[start : start + step])
        self.published += len(entries)

    async def _publish_window(self, entries: Sequence[OutboxEntry]) -> None:
        inbox = await self._ack_inbox()
        nc = self.transport.client
        self._next_window += 1
        window_id = str(self._next_window)
        window = _Window(entries)
        self._windows[window_id] = window
        reply_prefix = f"{inbox}.{window_id}."
        expected = self.stream
        try:
            with anyio.fail_after(self.timeout):
                with mapped_errors("outbox publish"):
                    for i, entry in enumerate(entries):
                        headers = dict(entry.headers) if entry.headers else {}
                        headers[MSG_ID] = entry.id
                        if expected is not None:
                            headers[_EXPECTED_STREAM] = expected
                        await nc.publish(
                            entry.subject,
                            entry.payload,
                            reply=reply_prefix + str(i),
                            headers=headers,
                        )
                await window.done.wait()
        except TimeoutError as exc:
            if isinstance(exc, ActorsError):
                raise
            raise RequestTimeout(
                f"outbox publish: {window.pending} of {len(entries)} entries not "
                f"acknowledged within {self.timeout:g}s"
            ) from exc
        finally:
            del self._windows[window_id]  # late acks are ignored from here on
        if window.error is not None:
            raise window.error
        self.duplicates += window.duplicates

    async def _ack_inbox(self) -> str:
        """The inbox prefix acks come back under; subscribed once per connection."""
        client = self.transport.client
        if self._sub is None or self._sub_client is not client:
            inbox = self.transport.new_inbox()
            self._sub = await self.transport.subscribe(
                f"{inbox}.>",
                self._on_ack,
                pending_msgs_limit=max(65_536, 2 * self.max_in_flight),
            )
            self._inbox = inbox
            self._sub_client = client
        return self._inbox

    async def _on_ack(self, msg: Msg) -> None:
        window_id, _, index_text = msg.subject[len(self._inbox) + 1 :].partition(".")
        window = self._windows.get(window_id)
        if window is None:
            return
        try:
            index = int(index_text)
            if window.acked[index]:
                return
        except (ValueError, IndexError):
            return
        window.acked[index] = 1
        subject = window.entries[index].subject
        error: TransportError | None = None
        if msg.headers and msg.headers.get("Status") == "503":
            error = NoResponders(f"outbox publish: no stream captures {subject!r}")
        else:
            try:
                ack = _decode_ack(msg.data)
            except msgspec.DecodeError as exc:
                error = TransportError(f"outbox publish to {subject!r}: unreadable ack ({exc})")
            else:
                if ack.error is not None:
                    error = TransportError(
                        f"outbox publish to {subject!r}: {ack.error.description} "
                        f"(code {ack.error.code}, err_code {ack.error.err_code})"
                    )
                elif ack.duplicate:
                    window.duplicates += 1
        if error is not None:
            if window.error is None:
                window.error = error
            window.done.set()
            return
        window.pending -= 1
        if window.pending == 0:
            window.done.set()


class CorePublisher:
    """An :class:`~actors.outbox.OutboxSink` that publishes with core NATS, then flushes.

    Nothing is stored: subscribers see entries live or never. ``Nats-Msg-Id`` is still
    set, so a subscriber can drop the duplicates of a retried batch."""

    def __init__(self, transport: NatsTransport, *, timeout: float = 10.0) -> None:
        self.transport = transport
        self.timeout = timeout
        self.published = 0

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        for entry in entries:
            headers = dict(entry.headers) if entry.headers else {}
            headers[MSG_ID] = entry.id
            await self.transport.publish(entry.subject, entry.payload, headers=headers)
        await self.transport.flush(timeout=self.timeout)
        self.published += len(entries)

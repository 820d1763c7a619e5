"""Outbox sinks on NATS: where committed outbox entries are published.

:class:`JetStreamOutbox` stores entries in a JetStream stream. Each message carries
``Nats-Msg-Id`` = the entry's id, so when the relay publishes a batch again after a crash
or a failed ack, the stream drops the copies it already has (within the stream's
``duplicate_window``): delivery downstream is at least once and storage exactly once.

Publishing is pipelined: the whole batch goes out back to back with ``publish_async``
(bounded by ``max_in_flight``) and only then are the acks awaited, which is an order of
magnitude faster than awaiting each ack in turn. :meth:`JetStreamOutbox.publish` returns
only when every entry of the batch was acknowledged and raises
:class:`~actors.errors.TransportError` otherwise, so the relay keeps the batch and retries.

:class:`CorePublisher` publishes with core NATS (no storage, no acks; a flush makes sure
the server received the batch). It is for tests and benchmarks that need no stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StorageType

from ..errors import RequestTimeout
from ..journal.base import OutboxEntry
from .errors import mapped_errors
from .transport import NatsTransport

__all__ = ["CorePublisher", "JetStreamOutbox"]

MSG_ID = "Nats-Msg-Id"
_STREAM_NAME_IN_USE = 10058


class JetStreamOutbox:
    """An :class:`~actors.outbox.OutboxSink` that stores entries in JetStream.

    ``stream``, when given, is sent as ``Nats-Expected-Stream`` so an entry whose subject
    some other stream captures is refused rather than stored in the wrong place.
    ``timeout`` bounds one :meth:`publish` call from first send to last ack."""

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
        self.max_in_flight = max_in_flight
        self.published = 0
        """Entries acknowledged by the stream (duplicates included)."""
        self.duplicates = 0
        """Entries the stream reported as already stored."""
        self._js: JetStreamContext | None = None

    def _context(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.transport.jetstream(
                timeout=self.timeout, publish_async_max_pending=self.max_in_flight
            )
        return self._js

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
        js = self._context()
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
        :class:`~actors.errors.TransportError`."""
        if not entries:
            return
        js = self._context()
        expected = self.stream
        acks: list[asyncio.Future[nats.js.api.PubAck]] = []
        duplicates = 0
        try:
            with anyio.fail_after(self.timeout), mapped_errors("outbox publish"):
                for entry in entries:
                    headers = dict(entry.headers) if entry.headers else {}
                    headers[MSG_ID] = entry.id
                    acks.append(
                        await js.publish_async(
                            entry.subject, entry.payload, headers=headers, stream=expected
                        )
                    )
                for ack in acks:
                    if (await ack).duplicate:
                        duplicates += 1
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            pending = sum(1 for ack in acks if not ack.done())
            raise RequestTimeout(
                f"outbox publish: {pending + len(entries) - len(acks)} of {len(entries)} "
                f"entries not acknowledged within {self.timeout:g}s"
            ) from exc
        finally:
            # Abandoned acks must not keep their publish_async slots.
            for ack in acks:
                if not ack.done():
                    ack.cancel()
        self.published += len(entries)
        self.duplicates += duplicates


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

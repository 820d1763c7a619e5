"""The journal interface: what an event-sourced actor needs from a store.

An actor is identified by ``(kind, key)``. Its journal is an append-only list of
opaque event payloads numbered 1, 2, 3, ... (``seq``). A write names the sequence the
writer last saw (``expected_seq``); if the store holds a different one the write is
refused with :class:`~actors.errors.SequenceConflict` (one writer per actor, enforced by
the store, not by hope).

Everything an actor's turn produces goes into the same atomic write: the events, an
optional snapshot, durable deadlines set or cancelled, idempotency records
(request id -> first reply) and outbox entries (messages to publish after commit).

Implementations: :class:`~actors.journal.memory.MemoryJournal` (tests) and
:class:`~actors.journal.sqlite.SqliteJournal` (WAL, group commit). Both pass the shared
suite in ``tests/journal_suite.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..errors import SequenceConflict

__all__ = [
    "DeadLetter",
    "Deadline",
    "Journal",
    "OutboxEntry",
    "Recovery",
    "WriteRequest",
]


class Deadline(msgspec.Struct, frozen=True):
    """A durable timer: deliver ``payload`` to actor ``(kind, key)`` at ``due``.

    ``due`` is wall-clock time in seconds since the epoch. ``name`` is unique per actor:
    setting a deadline with an existing name replaces it.
    """

    kind: str
    key: str
    name: str
    due: float
    payload: bytes


class OutboxEntry(msgspec.Struct, frozen=True):
    """A message to publish once its write has committed. ``id`` is globally unique and is
    used as the de-duplication id downstream (e.g. ``Nats-Msg-Id``)."""

    id: str
    subject: str
    payload: bytes
    headers: dict[str, str] = {}


class WriteRequest(msgspec.Struct, frozen=True):
    """One actor's share of a group commit. ``events`` get sequence numbers
    ``expected_seq + 1 ...``; ``snapshot`` (if any) is the state after the last of them."""

    kind: str
    key: str
    expected_seq: int
    events: list[bytes] = []
    snapshot: bytes | None = None
    deadlines_set: list[Deadline] = []
    deadlines_cancel: list[str] = []
    idempotency: list[tuple[str, bytes]] = []
    outbox: list[OutboxEntry] = []


class Recovery(msgspec.Struct, frozen=True):
    """What an actor needs to come back: the latest snapshot and the events after it.

    ``seq`` is the sequence of the last stored event (0 for an actor never written).
    ``events`` are the payloads with sequence ``snapshot_seq + 1 .. seq`` in order.
    """

    kind: str
    key: str
    seq: int = 0
    snapshot: bytes | None = None
    snapshot_seq: int = 0
    events: list[bytes] = []
    idempotency: dict[str, bytes] = {}
    deadlines: list[Deadline] = []


class DeadLetter(msgspec.Struct, frozen=True):
    """A message the actor failed on too many times, kept for inspection."""

    kind: str
    key: str
    message_type: str
    payload: bytes | None
    error: str
    attempts: int
    at: float
    id: int = 0


@runtime_checkable
class Journal(Protocol):
    """An event store. All methods are safe to call from the event loop (they never block
    it) and raise :class:`~actors.errors.JournalUnavailable` on store failure."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def recover(self, ids: Sequence[tuple[str, str]]) -> list[Recovery]:
        """Load many actors in one round trip, in the order asked. Unknown actors come
        back as an empty :class:`Recovery` (``seq == 0``)."""
        ...

    async def write(self, batch: Sequence[WriteRequest]) -> list[SequenceConflict | None]:
        """Commit a group of writes in one transaction. Each request either applies in
        full or not at all; a request whose ``expected_seq`` does not match gets a
        :class:`SequenceConflict` in its slot while the others still commit. A failure of
        the whole batch raises :class:`~actors.errors.JournalUnavailable`."""
        ...

    async def deadlines(
        self, after: tuple[float, str, str, str] | None = None, limit: int = 10_000
    ) -> list[Deadline]:
        """Pending deadlines ordered by ``(due, kind, key, name)``, strictly after the
        cursor ``after`` when given; used on start to re-arm every deadline."""
        ...

    async def outbox(self, limit: int = 1000) -> list[OutboxEntry]:
        """Committed outbox entries not yet acknowledged, oldest first."""
        ...

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        """Forget outbox entries that were published."""
        ...

    async def add_dead_letter(self, letter: DeadLetter) -> None: ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent first."""
        ...

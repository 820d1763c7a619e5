"""The read model's SQLite file: windows and reservations as the window events left them.

``iceshop.windows.list`` filters and pages over every window, which no single window
actor can answer, so the window events are projected into a file of their own (apart
from the journal: it can be deleted and rebuilt from the event stream at any time).

Applying is idempotent, because JetStream delivers at least once and may redeliver out
of order (an unacked message comes back after later ones were applied):

- Each window row keeps the ``seq`` of the event its view came from. An event updates the
  view only when its ``seq`` is higher, so a duplicate or a late event never moves the
  view backwards, and a gap (a later event first) is applied at once.
- Each reservation row keeps the ``seq`` of the last event about it, and is updated only
  by a higher one. Late ``joined`` / ``left`` events are therefore still applied to their
  own reservation even when the window's view is already newer: nothing is lost and
  nothing is counted twice. ``join_seq`` is the lowest ``seq`` seen for the reservation,
  which is its ``joined`` event once that has arrived: reservations list in join order.
- A window with an outcome (closed or cancelled) settles its reservations: those still
  ``reserved`` become ``confirmed`` when it succeeded and ``released`` when it failed.
  This runs after every batch that touched the window, so a reservation whose event
  arrives after the close is settled too.

A batch is one transaction, in one hop to aiosqlite's thread (the same technique as the
journal, see ``actors.journal.sqlite``), together with the stream position it reached:
the projector acknowledges the messages only after that commit, and compares the stored
position with its durable consumer on start to notice a file that was deleted or
restored from an older copy.

The schema version is ``PRAGMA user_version``. A file of another version is not migrated
but emptied: a read model is derived data, the projector rebuilds it from the stream.

Two processes may have the file open at once: the projector writing it (``iceshop
projector``) and a node only reading it (``readmodel_projector = "external"``). Opening is
therefore idempotent and serialised: the busy timeout is set before anything else, the
version check and the schema creation run in one ``BEGIN IMMEDIATE`` transaction (the
second process to get there finds the schema made and leaves it, data and all), and only
a writer (``writer=True``, the projector's side) ever empties a file of another version.
A reader creates the schema of a brand-new file, so it can answer before the projector
has run, but leaves a file of another version untouched: that is the projector's to
rebuild, and the reader's queries fail as unavailable meanwhile instead of wiping it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self, TypeVar

import aiosqlite
import anyio
import msgspec
import structlog

from actors.errors import JournalUnavailable
from actors.journal.sqlite import on_connection_thread, open_connection
from iceshop.readmodel.events import BadEvent, WindowChange, read_window_event

__all__ = ["SCHEMA_VERSION", "ApplyResult", "ReadModel", "StreamPosition"]

SCHEMA_VERSION: Final = 1

_TABLES: Final = ("windows", "reservations", "positions")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS windows(
        window_id TEXT NOT NULL PRIMARY KEY, product_id TEXT NOT NULL,
        seller_id TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT,
        activates_at TEXT NOT NULL, seq INTEGER NOT NULL, view TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS windows_by_time ON windows(activates_at, window_id)",
    "CREATE INDEX IF NOT EXISTS windows_by_state ON windows(state, activates_at, window_id)",
    "CREATE INDEX IF NOT EXISTS windows_by_product ON windows(product_id, activates_at, window_id)",
    "CREATE INDEX IF NOT EXISTS windows_by_seller ON windows(seller_id, activates_at, window_id)",
    """CREATE TABLE IF NOT EXISTS reservations(
        window_id TEXT NOT NULL, join_id TEXT NOT NULL, buyer_id TEXT NOT NULL,
        quantity INTEGER NOT NULL, status TEXT NOT NULL, reserved_at TEXT NOT NULL,
        seq INTEGER NOT NULL, join_seq INTEGER NOT NULL,
        PRIMARY KEY (window_id, join_id)
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS reservations_in_order
        ON reservations(window_id, join_seq, join_id)""",
    """CREATE TABLE IF NOT EXISTS positions(
        stream TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

_UPSERT_WINDOW: Final = """
INSERT INTO windows(window_id, product_id, seller_id, state, outcome, activates_at, seq, view)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(window_id) DO UPDATE SET
    product_id = excluded.product_id, seller_id = excluded.seller_id,
    state = excluded.state, outcome = excluded.outcome,
    activates_at = excluded.activates_at, seq = excluded.seq, view = excluded.view
WHERE excluded.seq > windows.seq
"""

_UPSERT_RESERVATION: Final = """
INSERT INTO reservations(
    window_id, join_id, buyer_id, quantity, status, reserved_at, seq, join_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(window_id, join_id) DO UPDATE SET
    buyer_id = iif(excluded.seq > reservations.seq, excluded.buyer_id, reservations.buyer_id),
    quantity = iif(excluded.seq > reservations.seq, excluded.quantity, reservations.quantity),
    status = iif(excluded.seq > reservations.seq, excluded.status, reservations.status),
    reserved_at = iif(
        excluded.seq > reservations.seq, excluded.reserved_at, reservations.reserved_at),
    seq = max(reservations.seq, excluded.seq),
    join_seq = min(reservations.join_seq, excluded.join_seq)
WHERE excluded.seq > reservations.seq OR excluded.join_seq < reservations.join_seq
"""

_SETTLE: Final = """
UPDATE reservations SET status = ? WHERE window_id = ? AND status = 'reserved'
"""

_SAVE_POSITION: Final = """
INSERT INTO positions(stream, seq) VALUES (?, ?)
ON CONFLICT(stream) DO UPDATE SET seq = max(positions.seq, excluded.seq)
"""

_BUSY_TIMEOUT_MS: Final = 5000

_T = TypeVar("_T")
_log = structlog.get_logger(__name__)
_encode = msgspec.json.Encoder().encode


class StreamPosition(msgspec.Struct, frozen=True):
    """The highest stream sequence of a batch: how far the projection has read."""

    stream: str
    seq: int


class ApplyResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one batch did: events that changed something, repeats, unreadable ones."""

    applied: int
    duplicates: int
    malformed: int


class ReadModel:
    """The windows and reservations read model in one SQLite file (WAL).

    Use as ``async with ReadModel(path) as store: ...`` or call :meth:`open` /
    :meth:`close`. Failures of the file raise :class:`~actors.errors.JournalUnavailable`
    (retryable), which the wire maps to ``unavailable``. ``writer=False`` is for a process
    that only queries a file another process projects into: it never empties the file
    (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, writer: bool = True) -> None:
        self.path = os.fspath(path)
        self.writer = writer
        self._conn: aiosqlite.Connection | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._conn = await open_connection(
            self.path, lambda db: _prepare(db, writer=self.writer), what="read model"
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with anyio.CancelScope(shield=True):  # a cancelled close must still stop the thread
            try:
                await conn.close()
            except sqlite3.Error as exc:
                raise JournalUnavailable(f"closing read model {self.path}: {exc}") from exc

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- writing ------------------------------------------------------------------------

    async def apply(
        self,
        events: Sequence[tuple[str, bytes]],
        position: StreamPosition | None = None,
    ) -> ApplyResult:
        """Apply a batch of window events ``(subject, body)`` in one transaction.

        Idempotent: applying the same events again, in any order, changes nothing.
        Unreadable events are skipped (logged); ``position`` is stored with the batch."""
        changes: list[WindowChange] = []
        malformed = 0
        for subject, body in events:
            try:
                changes.append(read_window_event(subject, body))
            except BadEvent as exc:
                malformed += 1
                _log.warning("read model skips an event", subject=subject, error=str(exc))
        if not changes and position is None:
            return ApplyResult(applied=0, duplicates=0, malformed=malformed)
        applied = await self._run(lambda db: _write(db, changes, position))
        return ApplyResult(applied=applied, duplicates=len(changes) - applied, malformed=malformed)

    # -- reading ------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only function on the connection's thread (the query module's door)."""
        return await self._run(fn)

    async def window_seq(self, window_id: str) -> int | None:
        """The ``seq`` of the event the window's view comes from; ``None`` if never seen."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT seq FROM windows WHERE window_id = ?", (window_id,)
            ).fetchone()
        )
        return None if row is None else int(row[0])

    async def position(self, stream: str) -> int:
        """The highest stream sequence applied from ``stream`` (0 when none)."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT seq FROM positions WHERE stream = ?", (stream,)
            ).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise JournalUnavailable("the read model is not open")
        try:
            return await on_connection_thread(conn, fn)
        except (sqlite3.Error, ValueError) as exc:
            # ValueError: aiosqlite's "connection closed" while the call was queued.
            raise JournalUnavailable(f"read model {self.path}: {exc}") from exc


# -- on the connection's thread --------------------------------------------------------------

_WindowRow = tuple[str, str, str, str, str | None, str, int, str]
_ReservationRow = tuple[str, str, str, int, str, str, int, int]


def _window_row(change: WindowChange) -> _WindowRow:
    v = change.view
    return (
        v.window_id,
        v.product_id,
        v.seller_id,
        v.state,
        v.outcome,
        v.activates_at,
        change.seq,
        _encode(v).decode(),
    )


def _reservation_row(change: WindowChange) -> _ReservationRow | None:
    r = change.reservation
    if r is None:
        return None
    return (
        change.window_id,
        r.join_id,
        r.buyer_id,
        r.quantity,
        r.status,
        r.reserved_at,
        change.seq,
        change.seq,
    )


def _write(
    db: sqlite3.Connection,
    changes: list[WindowChange],
    position: StreamPosition | None,
) -> int:
    """The batch's transaction; returns how many events changed something.

    A window's row is written once per batch, from the newest of its events the batch
    holds (the view an older one would write is overwritten in the same transaction
    anyway): a hot window's batch of joins costs one view, not one per join. An event
    counts as applied when its ``seq`` is above every ``seq`` seen for its window before
    it (stored, or earlier in the batch), or when its reservation changed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        applied = 0
        high: dict[str, int] = {}
        newest: dict[str, WindowChange] = {}
        touched: dict[str, None] = {}
        fresh: list[_ReservationRow] = []
        for change in changes:
            window_id = change.window_id
            seen = high.get(window_id)
            if seen is None:
                row = db.execute(
                    "SELECT seq FROM windows WHERE window_id = ?", (window_id,)
                ).fetchone()
                seen = 0 if row is None else int(row[0])
            reservation = _reservation_row(change)
            if change.seq > seen:
                high[window_id] = change.seq
                newest[window_id] = change
                if reservation is not None:
                    fresh.append(reservation)  # changed anyway: one statement for all
                changed = True
            else:
                high[window_id] = seen
                changed = (
                    reservation is not None
                    and db.execute(_UPSERT_RESERVATION, reservation).rowcount > 0
                )
            if changed:
                applied += 1
                touched[window_id] = None
        if fresh:
            db.executemany(_UPSERT_RESERVATION, fresh)
        for change in newest.values():
            db.execute(_UPSERT_WINDOW, _window_row(change))
        for window_id in touched:
            (outcome,) = db.execute(
                "SELECT outcome FROM windows WHERE window_id = ?", (window_id,)
            ).fetchone()
            if outcome is not None:
                status = "confirmed" if outcome == "succeeded" else "released"
                db.execute(_SETTLE, (status, window_id))
        if position is not None:
            db.execute(_SAVE_POSITION, (position.stream, position.seq))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    return applied


def _prepare(db: sqlite3.Connection, *, writer: bool) -> None:
    # First: another process may hold a lock on the file (its own open, a batch).
    db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode not in ("wal", "memory"):
        raise sqlite3.OperationalError(f"WAL mode unavailable (journal_mode={mode})")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 or (writer and version != SCHEMA_VERSION):
            if version != 0:
                _log.warning(
                    "read model schema changed; rebuilding it from the stream",
                    found=version,
                    expected=SCHEMA_VERSION,
                )
                for table in _TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            _log.warning(
                "read model file has another schema version; left to its projector",
                found=version,
                expected=SCHEMA_VERSION,
            )
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one worth reporting

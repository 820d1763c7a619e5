"""The two list queries the read model answers: ``windows.list`` and ``reservations``.

Both take the decoded request Struct of the wire (``ListWindows``, ``ListReservations``)
and return the reply data, or a ``ShopError`` as a value (never raised):
``invalid_request`` for a cursor that is not theirs, ``unknown_window`` for reservations
of a window the projection has never seen.

Order is stable, so paging is: windows by ``activates_at`` then ``window_id``
(the time is stored in the wire's fixed-width UTC format, whose text order is time
order); reservations in join order (``join_seq``), then ``join_id``. Each page asks
for one row more than its limit: that extra row only says whether a next page exists,
so ``next_cursor`` is ``null`` exactly at the end.

The answers are as fresh as the projection: a window's own ``get`` (answered by its
actor) can be a few milliseconds ahead of the list.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final, cast

import msgspec

from iceshop.readmodel.cursor import (
    ReservationsAfter,
    WindowsAfter,
    decode_cursor,
    encode_cursor,
)
from iceshop.readmodel.store import ReadModel
from iceshop.wire import (
    MAX_LIMIT,
    ErrorCode,
    ListReservations,
    ListWindows,
    ReservationsReply,
    ReservationStatus,
    ReservationView,
    ShopError,
    WindowsReply,
    WindowView,
)

__all__ = ["list_reservations", "list_windows"]

_decode_view: Final = msgspec.json.Decoder(WindowView).decode


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))


async def list_windows(store: ReadModel, request: ListWindows) -> WindowsReply | ShopError:
    """One page of windows, filtered by ``state``, ``product_id`` and ``seller_id``."""
    after: WindowsAfter | None = None
    if request.cursor is not None:
        decoded = decode_cursor(request.cursor, WindowsAfter)
        if isinstance(decoded, ShopError):
            return decoded
        after = decoded
    where: list[str] = []
    params: list[Any] = []
    for column in ("state", "product_id", "seller_id"):
        value = getattr(request, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if after is not None:
        where.append("(activates_at, window_id) > (?, ?)")
        params += (after.activates_at, after.window_id)
    limit = _clamp(request.limit)
    sql = "SELECT activates_at, window_id, view FROM windows"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY activates_at, window_id LIMIT ?"
    params.append(limit + 1)

    def run(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
        return db.execute(sql, params).fetchall()

    rows = await store.read(run)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        activates_at, window_id, _ = page[-1]
        next_cursor = encode_cursor(WindowsAfter(activates_at, window_id))
    return WindowsReply(
        windows=[_decode_view(view) for _, _, view in page], next_cursor=next_cursor
    )


async def list_reservations(
    store: ReadModel, window_id: str, request: ListReservations
) -> ReservationsReply | ShopError:
    """One page of a window's reservations, in join order."""
    after: ReservationsAfter | None = None
    if request.cursor is not None:
        decoded = decode_cursor(request.cursor, ReservationsAfter)
        if isinstance(decoded, ShopError):
            return decoded
        after = decoded
    limit = _clamp(request.limit)
    sql = (
        "SELECT join_seq, join_id, buyer_id, quantity, status, reserved_at"
        " FROM reservations WHERE window_id = ?"
    )
    params: list[Any] = [window_id]
    if after is not None:
        sql += " AND (join_seq, join_id) > (?, ?)"
        params += (after.join_seq, after.join_id)
    sql += " ORDER BY join_seq, join_id LIMIT ?"
    params.append(limit + 1)

    def run(db: sqlite3.Connection) -> list[tuple[int, str, str, int, str, str]] | None:
        db.execute("BEGIN")  # the existence check and the page see the same instant
        try:
            known = db.execute("SELECT 1 FROM windows WHERE window_id = ?", (window_id,)).fetchone()
            return None if known is None else db.execute(sql, params).fetchall()
        finally:
            db.execute("COMMIT")

    rows = await store.read(run)
    if rows is None:
        return ShopError(ErrorCode.UNKNOWN_WINDOW, f"no window {window_id!r}")
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        join_seq, join_id = page[-1][:2]
        next_cursor = encode_cursor(ReservationsAfter(join_seq, join_id))
    return ReservationsReply(
        reservations=[
            ReservationView(
                join_id=join_id,
                buyer_id=buyer_id,
                quantity=quantity,
                status=cast(ReservationStatus, status),
                reserved_at=reserved_at,
            )
            for _, join_id, buyer_id, quantity, status, reserved_at in page
        ],
        next_cursor=next_cursor,
    )

"""Read models: the windows list and each window's reservations, in SQLite.

``iceshop.windows.list`` filters and pages over all windows, which no window actor can
answer alone, so the window events of the JetStream stream are projected into a SQLite
file of their own::

    JetStream ICESHOP_EVENTS ──► Projector (durable pull consumer, ack after commit)
                                    │ apply(batch): one transaction, idempotent
                                    ▼
                               ReadModel (readmodel.db) ◄── list_windows / list_reservations

The file is derived data: delete it and the projector rebuilds it from the stream.
"""

from __future__ import annotations

from iceshop.readmodel.cursor import ReservationsAfter, WindowsAfter, decode_cursor, encode_cursor
from iceshop.readmodel.events import BadEvent, WindowChange, read_window_event
from iceshop.readmodel.projector import DEFAULT_DURABLE, Projector
from iceshop.readmodel.query import list_reservations, list_windows
from iceshop.readmodel.store import SCHEMA_VERSION, ApplyResult, ReadModel, StreamPosition

__all__ = [
    "DEFAULT_DURABLE",
    "SCHEMA_VERSION",
    "ApplyResult",
    "BadEvent",
    "Projector",
    "ReadModel",
    "ReservationsAfter",
    "StreamPosition",
    "WindowChange",
    "WindowsAfter",
    "decode_cursor",
    "encode_cursor",
    "list_reservations",
    "list_windows",
    "read_window_event",
]

"""Window events as the read model reads them: from ``(subject, body)`` to one change.

The read model depends on the wire contract only, never on the window actor's insides:
an event body is ``{"event_id", "type", "at", "seq", "data"}`` whose ``data`` is a window
view; ``joined`` and ``left`` add the reservation they are about (``reservation``, an
additive field). Unknown fields are ignored, as the contract allows new ones.

A body that cannot be read (malformed JSON, a missing field, a subject that does not
match its body) raises :class:`BadEvent`. The store skips such an event and logs it:
a poison message must not stop the projection of every other window.
"""

from __future__ import annotations

from typing import Final

import msgspec

from iceshop.wire import Event, ReservationView, WindowView

__all__ = ["BadEvent", "WindowChange", "read_window_event"]


class BadEvent(ValueError):
    """An event the read model cannot use; ``str()`` says why."""


class _Data(WindowView, frozen=True):
    """A window event's data: the view, and the reservation of ``joined`` / ``left``."""

    reservation: ReservationView | None = None


class WindowChange(msgspec.Struct, frozen=True, kw_only=True):
    """One window event, ready to store: the view after it, and its reservation."""

    window_id: str
    type: str
    seq: int
    view: WindowView
    reservation: ReservationView | None


_decode: Final = msgspec.json.Decoder(Event[_Data]).decode
_VIEW_FIELDS: Final = WindowView.__struct_fields__


def read_window_event(subject: str, body: bytes) -> WindowChange:
    """Decode one event of ``<prefix>.events.window.<window_id>.<type>``."""
    try:
        event = _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadEvent(f"unreadable window event on {subject!r}: {exc}") from exc
    data = event.data
    tokens = subject.split(".")
    if tokens[-4:] != ["events", "window", data.window_id, event.type]:
        raise BadEvent(
            f"subject {subject!r} does not match the event "
            f"(window {data.window_id!r}, type {event.type!r})"
        )
    if event.seq < 1:
        raise BadEvent(f"event on {subject!r} has seq {event.seq}; seqs start at 1")
    view = WindowView(**{name: getattr(data, name) for name in _VIEW_FIELDS})
    return WindowChange(
        window_id=data.window_id,
        type=event.type,
        seq=event.seq,
        view=view,
        reservation=data.reservation,
    )

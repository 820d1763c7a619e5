"""Opaque list cursors: the key of the last row a page showed.

Pages are cut by key, not by offset, so a window or a reservation arriving between two
pages neither repeats nor hides a row that was already past the cursor. The key is a
tagged JSON array in URL-safe base64 without padding: clients treat it as opaque, and
the tag stops a cursor of one query from being accepted by another. Anything that does
not decode to the expected key is ``invalid_request`` naming the ``cursor`` field.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Final, TypeVar

import msgspec

from iceshop.wire import ID_PATTERN, MAX_STRING, ShopError

__all__ = ["ReservationsAfter", "WindowsAfter", "decode_cursor", "encode_cursor"]

_Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
_Time = Annotated[str, msgspec.Meta(max_length=32)]
_Seq = Annotated[int, msgspec.Meta(ge=0)]


class WindowsAfter(msgspec.Struct, frozen=True, array_like=True, tag="w"):
    """``windows.list`` resumes after this window (ordered by activation, then id)."""

    activates_at: _Time
    window_id: _Id


class ReservationsAfter(msgspec.Struct, frozen=True, array_like=True, tag="r"):
    """``reservations`` resumes after this reservation (ordered by join)."""

    join_seq: _Seq
    join_id: _Id


_K = TypeVar("_K", WindowsAfter, ReservationsAfter)
_ENCODER: Final = msgspec.json.Encoder()


def encode_cursor(key: WindowsAfter | ReservationsAfter) -> str:
    return base64.urlsafe_b64encode(_ENCODER.encode(key)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, kind: type[_K]) -> _K | ShopError:
    """The key ``text`` carries, or ``invalid_request`` when it is not a ``kind`` cursor."""
    if len(text) > MAX_STRING:
        return _invalid()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        key: _K = msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return _invalid()
    return key


def _invalid() -> ShopError:
    return ShopError.invalid("cursor: not a cursor of this query", field="cursor")

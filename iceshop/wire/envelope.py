"""Reply envelopes: ``{"ok": true, "data": ...}`` or ``{"ok": false, "error": ...}``.

Every reply is exactly one message of one of these two shapes. The success envelope is
written around the encoded data by concatenation, so encoding a reply costs one msgspec
encode of the data and no wrapper object. One module-level encoder is reused for every
reply (msgspec encoders are stateless between calls).

Clients (the CLI, tests, other services in Python) read replies with ``decode_reply``,
which returns the typed data or raises the reply's ``ShopError``. The time format of
replies (``format_time`` / ``parse_time``) lives in ``times.py`` and is re-exported here.
"""

from __future__ import annotations

import functools
from typing import Any, Final, Generic, TypeVar, overload

import msgspec

from iceshop.wire.errors import ErrorCode, ErrorReply, ShopError, to_shop_error
from iceshop.wire.times import format_time, parse_time

__all__ = [
    "decode_reply",
    "encode",
    "encode_error",
    "encode_ok",
    "format_time",
    "parse_time",
]

T = TypeVar("T")

_ENCODER: Final = msgspec.json.Encoder()
_OK_HEAD: Final = b'{"ok":true,"data":'
_ERROR_HEAD: Final = b'{"ok":false,"error":'


def encode(value: Any) -> bytes:
    """JSON-encode any Struct or plain value with the shared encoder (events, bodies)."""
    return _ENCODER.encode(value)


def encode_ok(data: Any) -> bytes:
    """``{"ok": true, "data": data}``; ``data`` is a view Struct or a plain mapping."""
    return _OK_HEAD + _ENCODER.encode(data) + b"}"


def encode_error(error: ShopError | ErrorReply | BaseException) -> bytes:
    """``{"ok": false, "error": {...}}``; other exceptions are mapped by ``to_shop_error``."""
    if not isinstance(error, ErrorReply):
        error = to_shop_error(error).to_reply()
    return _ERROR_HEAD + _ENCODER.encode(error) + b"}"


class _Reply(msgspec.Struct, Generic[T]):
    ok: bool
    data: T | None = None
    error: ErrorReply | None = None


@functools.lru_cache(maxsize=64)
def _reply_decoder(data_type: Any) -> msgspec.json.Decoder[_Reply[Any]]:
    return msgspec.json.Decoder(_Reply[data_type])


@overload
def decode_reply(payload: bytes) -> Any: ...
@overload
def decode_reply(payload: bytes, data_type: type[T]) -> T: ...
def decode_reply(payload: bytes, data_type: Any = Any) -> Any:
    """The ``data`` of a success reply as ``data_type``; a failure raises its ShopError."""
    try:
        reply = _reply_decoder(data_type).decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ShopError(ErrorCode.INTERNAL, f"malformed reply: {exc}") from exc
    if reply.ok:
        return reply.data
    if reply.error is None:
        raise ShopError(ErrorCode.INTERNAL, "malformed reply: ok is false without error")
    raise ShopError.from_reply(reply.error)

"""How actor messages and replies cross between nodes: a tag plus msgpack bytes.

Inside a node a message is a Python object handed over by reference. Between nodes it
must become bytes, and the receiver must know which type to rebuild. Each type is
registered once under a *tag* (by default its ``__qualname__``), and a message travels
as ``(tag, msgpack)``. The tag goes in a header, so the body is exactly the msgspec
encoding and the receiver decodes it with a typed decoder made once per type (strict:
bytes that do not match the tag's type are an error, not a half-built object).

Built in, under tags starting with ``$`` (reserved):

* ``$plain`` — ``None`` and plain msgpack values (``str``, ``int``, ``float``, ``bool``,
  ``list``, ``dict``). Containers should hold plain values: a Struct nested in a list
  arrives as a dict.
* ``$error`` — every :class:`~actors.errors.ActorsError`, by class name with its
  message: a runtime error (``Overloaded``, ``ActorFailed``, ...) raised on the owner's
  node is raised again, as the same class, on the caller's. A name that is not in
  :mod:`actors.errors` arrives as a plain ``ActorsError`` (with the name in its message
  and its ``retryable`` flag kept). Only the message and ``retryable`` travel: extra
  attributes of an error (say ``SequenceConflict.expected``) do not.

Application exceptions used as reply values cross with :meth:`MessageCodec.register_error`,
and other types with :meth:`MessageCodec.register_custom`; both take the caller's own
encode/decode functions (an exception is not a Struct; a Struct may hold a field msgpack
cannot carry as is).

Encoding a type nobody registered raises :class:`~actors.errors.CodecError` at once, in
the sender: silently pickling or guessing would make the receiver's failure far away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .. import errors as _errors
from ..errors import ActorsError, CodecError

__all__ = ["ERROR_TAG", "PLAIN_TAG", "MessageCodec"]

PLAIN_TAG = "$plain"
"""The tag of ``None`` and plain msgpack values."""
ERROR_TAG = "$error"
"""The tag of :class:`~actors.errors.ActorsError` values."""

_PLAIN_TYPES = (type(None), str, int, float, bool, list, dict)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


class _WireError(msgspec.Struct, frozen=True, array_like=True):
    """An ActorsError on the wire."""

    name: str
    message: str
    retryable: bool = False


def _runtime_errors() -> dict[str, type[ActorsError]]:
    """The ActorsError classes of :mod:`actors.errors`, by class name."""
    found: dict[str, type[ActorsError]] = {}
    for value in vars(_errors).values():
        if isinstance(value, type) and issubclass(value, ActorsError):
            found[value.__name__] = value
    return found


class _Entry:
    """How one registered type is encoded and decoded."""

    __slots__ = ("decode", "encode", "tag")

    def __init__(
        self, tag: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
    ) -> None:
        self.tag = tag
        self.encode = encode
        self.decode = decode


class MessageCodec:
    """Tags and msgpack for the messages and replies of actors on several nodes.

    Every node must register the same types under the same tags (register them in one
    place both the sender and the receiver import)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._plain_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
        self._error_decoder = msgspec.msgpack.Decoder(_WireError)
        self._by_type: dict[type, _Entry] = {}
        self._by_tag: dict[str, _Entry] = {}
        self._errors = _runtime_errors()

    # -- registration ------------------------------------------------------------------

    def register(self, *types: type[msgspec.Struct], tag: str | None = None) -> None:
        """Register Struct types; each travels under ``tag`` (only with one type) or its
        ``__qualname__``. A tag or type registered twice is a ``ValueError``."""
        if tag is not None and len(types) != 1:
            raise ValueError("a tag names one type: register the others separately")
        for cls in types:
            if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
                raise TypeError(f"{cls!r} is not a msgspec Struct type")
            decoder = msgspec.msgpack.Decoder(cls)
            self._add(cls, tag or cls.__qualname__, self._encoder.encode, decoder.decode)

    def register_custom(
        self,
        cls: type[T],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        *,
        tag: str | None = None,
    ) -> None:
        """Register a type with its own ``encode(value) -> bytes`` and
        ``decode(bytes) -> value`` (a Struct holding something msgpack cannot carry as
        is, or any other class). Matched by exact type, like :meth:`register`."""
        if not isinstance(cls, type):
            raise TypeError(f"{cls!r} is not a type")
        self._add(cls, tag or cls.__qualname__, encode, decode)

    def register_error(
        self,
        exc_type: type[E],
        encode: Callable[[E], bytes],
        decode: Callable[[bytes], E],
        *,
        tag: str | None = None,
    ) -> None:
        """Register an application exception used as a reply value, with its own
        ``encode(exc) -> bytes`` and ``decode(bytes) -> exc``. (An ActorsError subclass
        registered here travels with its own encoding instead of by name.)"""
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise TypeError(f"{exc_type!r} is not an exception type")
        self.register_custom(exc_type, encode, decode, tag=tag)

    def _add(
        self, cls: type, tag: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
    ) -> None:
        if not tag or tag.startswith("$"):
            raise ValueError(f"tag {tag!r}: tags must be non-empty and not start with '$'")
        if tag in self._by_tag:
            raise ValueError(f"tag {tag!r} is already registered")
        if cls in self._by_type:
            raise ValueError(f"{cls.__qualname__} is already registered")
        entry = _Entry(tag, encode, decode)
        self._by_tag[tag] = entry
        self._by_type[cls] = entry

    def is_registered(self, tag: str) -> bool:
        """Whether ``tag`` can be decoded (a registered or built-in tag)."""
        return tag in self._by_tag or tag in (PLAIN_TAG, ERROR_TAG)

    # -- encoding ----------------------------------------------------------------------

    def encode(self, value: Any) -> tuple[str, bytes]:
        """``(tag, bytes)`` for ``value``; :class:`~actors.errors.CodecError` when its
        type is not registered (or the encoder refuses the value)."""
        cls = type(value)
        entry = self._by_type.get(cls)
        try:
            if entry is not None:
                return entry.tag, entry.encode(value)
            if cls in _PLAIN_TYPES:
                return PLAIN_TAG, self._encoder.encode(value)
            if isinstance(value, ActorsError):
                wire = _WireError(cls.__name__, str(value), bool(value.retryable))
                return ERROR_TAG, self._encoder.encode(wire)
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode a {cls.__qualname__}: {exc}") from exc
        raise CodecError(
            f"cannot encode a {cls.__qualname__}: its type is not registered with the "
            "MessageCodec (register Structs with register, exceptions with register_error)"
        )

    # -- decoding ----------------------------------------------------------------------

    def decode(self, tag: str, data: bytes) -> Any:
        """The value encoded as ``(tag, data)``; :class:`~actors.errors.CodecError` for
        an unknown tag or bytes that do not match it."""
        try:
            entry = self._by_tag.get(tag)
            if entry is not None:
                return entry.decode(data)
            if tag == PLAIN_TAG:
                return self._plain_decoder.decode(data)
            if tag == ERROR_TAG:
                return self._decode_error(self._error_decoder.decode(data))
        except CodecError:
            raise
        except Exception as exc:  # a decoder, or the caller's decode function, refused
            raise CodecError(f"cannot decode a {tag!r}: {exc}") from exc
        raise CodecError(f"unknown message tag {tag!r} (not registered on this node)")

    def _decode_error(self, wire: _WireError) -> ActorsError:
        cls = self._errors.get(wire.name)
        if cls is None:
            error = ActorsError(f"{wire.name}: {wire.message}")
            error.retryable = wire.retryable
            return error
        try:
            return cls(wire.message)
        except TypeError:
            # Its __init__ takes other arguments (SequenceConflict): build it bare.
            error = cls.__new__(cls)
            error.args = (wire.message,)
            return error

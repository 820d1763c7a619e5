"""Every message and reply that may travel between the shop's nodes, under one codec.

In a cluster a buyer actor on one node answers a window actor on another, a request
that arrived at one node is served by the node that owns its actor, and the reply comes
back the same way (see :mod:`actors.cluster`). Each node builds this codec the same way,
so a tag means the same type everywhere.

What is registered: every msgspec Struct defined in the shop's modules (messages,
replies, views; the command-line and demo modules are left out), tagged
``<module>.<class>`` so two classes with one name never collide; :class:`Request`, whose
``body`` is one of many command types, travels as the command's JSON and is decoded
by the wire layer again on arrival (the same checks as from a client); and
:class:`~iceshop.wire.ShopError`, the domain's error replies.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import msgspec

from actors.cluster.codec import MessageCodec
from iceshop.protocol import Principal, Request
from iceshop.wire import CommandKind, ErrorCode, ShopError
from iceshop.wire.decode import decode_command

__all__ = ["shop_codec"]

_SKIPPED = ("iceshop.cli", "iceshop.demo", "iceshop.node.messages")


class _WireRequest(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    body: bytes  # the command's JSON
    ids: dict[str, str]
    principal: Principal | None


class _WireShopError(msgspec.Struct, frozen=True, array_like=True):
    code: str
    message: str
    details: dict[str, Any] | None


_encoder = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
_request_decoder = msgspec.msgpack.Decoder(_WireRequest)
_error_decoder = msgspec.msgpack.Decoder(_WireShopError)


def _encode_request(request: Request) -> bytes:
    body = _json.encode(request.body)
    return _encoder.encode(_WireRequest(request.kind.value, body, request.ids, request.principal))


def _decode_request(data: bytes) -> Request:
    wire = _request_decoder.decode(data)
    kind = CommandKind(wire.kind)
    return Request(kind, decode_command(kind, wire.body), wire.ids, wire.principal)


def _encode_error(error: ShopError) -> bytes:
    return _encoder.encode(_WireShopError(error.code.value, error.message, error.details))


def _decode_error(data: bytes) -> ShopError:
    wire = _error_decoder.decode(data)
    return ShopError(ErrorCode(wire.code), wire.message, wire.details)


def _struct_types() -> list[type[msgspec.Struct]]:
    import iceshop

    found: list[type[msgspec.Struct]] = []
    for info in sorted(pkgutil.walk_packages(iceshop.__path__, "iceshop."), key=lambda i: i.name):
        if info.name.startswith(_SKIPPED):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, msgspec.Struct)
                and value.__module__ == module.__name__
                and value is not Request
            ):
                found.append(value)
    return found


@cache
def shop_codec() -> MessageCodec:
    """The codec of the shop's node-to-node messages (built once; immutable after)."""
    codec = MessageCodec()
    for cls in _struct_types():
        try:
            codec.register(cls, tag=f"{cls.__module__}.{cls.__qualname__}")
        except TypeError:
            continue  # a Struct that holds something msgpack cannot carry: never sent
    codec.register_custom(Request, _encode_request, _decode_request, tag="iceshop.Request")
    codec.register_error(ShopError, _encode_error, _decode_error, tag="iceshop.ShopError")
    return codec

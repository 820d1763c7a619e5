"""From a NATS request to an actor message, and from the actor's answer to a reply.

A kind's subscription (say ``iceshop.buyers.*.>``) hands the route the tokens after its
literal prefix; the route puts the kind's own tokens back in front (``buyers``), lets the
wire layer find the command and its ids, decodes the body, reads the deadline header
and returns ``Routed(key, Request, deadline)``. Every refusal is an error reply built
here, before any actor sees the request — so bad input changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors import Clock
from actors.nats import Routed
from iceshop.protocol import Request
from iceshop.wire import ErrorCode, ShopError, decode_command, encode_error, encode_ok, route
from iceshop.wire.headers import parse_headers

__all__ = ["encode_reply", "make_route"]

Route = Callable[[list[str], Mapping[str, str], bytes], Routed | bytes]


def make_route(head: Sequence[str], key_name: str, clock: Clock) -> Route:
    """A route for subjects ``<prefix>.<head...>.<key>...``: the actor key is the id
    named ``key_name``; the other ids of the subject travel in ``Request.ids``."""
    head = list(head)

    def route_request(
        tokens: list[str], headers: Mapping[str, str], payload: bytes
    ) -> Routed | bytes:
        try:
            found = route(head + tokens)
            body = decode_command(found.kind, payload)
            ids = dict(found.ids)
            key = ids.pop(key_name)
            deadline = None
            at = parse_headers(headers).deadline_at()
            if at is not None:
                remaining = at - clock.time()
                if remaining <= 0:
                    raise ShopError(
                        ErrorCode.UNAVAILABLE, "the request's deadline passed before it arrived"
                    )
                deadline = clock.monotonic() + remaining
        except ShopError as exc:
            return encode_error(exc)
        return Routed(key, Request(found.kind, body, ids), deadline)

    return route_request


def encode_reply(value: Any) -> bytes:
    """The reply body for whatever an actor answered (or the runtime raised)."""
    if isinstance(value, BaseException):
        return encode_error(value)
    return encode_ok(value)

"""From a NATS request to an actor message, and from the actor's answer to a reply.

A kind's subscription (say ``iceshop.buyers.*.>``) hands the route the tokens after its
literal prefix; the route puts the kind's own tokens back in front (``buyers``), lets the
wire layer find the command and its ids, decodes the body, reads the deadline header
and returns ``Routed(key, Request, deadline)``. Every refusal is an error reply built
here, before any actor sees the request — so bad input changes nothing.

With a :class:`~iceshop.auth.Gate` the checks run in the contract's precedence:
credentials (``unauthorized``) before the subject, body and headers
(``invalid_request``), then the role rules (``forbidden``) and the per-buyer rates
(``overloaded``). The principal travels on the ``Request`` for the rules only an actor
can decide (who owns a window or a decision).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors import Clock
from actors.nats import Routed
from iceshop.auth.gate import Gate
from iceshop.protocol import Principal, Request
from iceshop.wire import (
    Command,
    CommandKind,
    ErrorCode,
    ShopError,
    decode_command,
    encode_error,
    encode_ok,
    route,
)
from iceshop.wire.headers import parse_headers

__all__ = ["check_command", "encode_reply", "make_route"]

Route = Callable[[list[str], Mapping[str, str], bytes], Routed | bytes]


def make_route(
    head: Sequence[str],
    key_name: str,
    clock: Clock,
    gate: Gate | None = None,
    *,
    key: str | None = None,
) -> Route:
    """A route for subjects ``<prefix>.<head...>.<key>...``: the actor key is the id
    named ``key_name`` (or the fixed ``key``, keeping every id in ``Request.ids``); the
    other ids of the subject travel in ``Request.ids``."""
    head = list(head)
    fixed = key

    def route_request(
        tokens: list[str], headers: Mapping[str, str], payload: bytes
    ) -> Routed | bytes:
        try:
            parsed = parse_headers(headers)
            principal = gate.authenticate(parsed) if gate is not None else None
            found = route(head + tokens)
            body = decode_command(found.kind, payload)
            deadline = None
            at = parsed.deadline_at()
            if gate is not None:
                gate.authorize(principal, found.kind, found.ids, body)
            if at is not None:
                remaining = at - clock.time()
                if remaining <= 0:
                    raise ShopError(
                        ErrorCode.UNAVAILABLE, "the request's deadline passed before it arrived"
                    )
                deadline = clock.monotonic() + remaining
            if gate is not None:  # last: a refused request does not use up the rate
                gate.throttle(found.kind, found.ids, body)
            ids = dict(found.ids)
            actor_key = fixed if fixed is not None else ids.pop(key_name)
        except ShopError as exc:
            return encode_error(exc)
        return Routed(actor_key, Request(found.kind, body, ids, principal), deadline)

    return route_request


def check_command(
    gate: Gate | None, kind: CommandKind, headers: Mapping[str, str], payload: bytes
) -> tuple[Command, Principal | None]:
    """The same checks for a subject that no actor serves (``windows.list``,
    ``cluster.status``): the decoded body and the principal, or ``ShopError``."""
    principal = gate.authenticate(parse_headers(headers)) if gate is not None else None
    body = decode_command(kind, payload)
    if gate is not None:
        gate.admit(principal, kind, {}, body)
    return body, principal


def encode_reply(value: Any) -> bytes:
    """The reply body for whatever an actor answered (or the runtime raised)."""
    if isinstance(value, BaseException):
        return encode_error(value)
    return encode_ok(value)

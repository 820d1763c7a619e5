"""A contract client for the demo: it talks to the shop only through the wire contract.

The demo is an external service like any other: JSON bodies on the contract's command
subjects (built with :func:`iceshop.wire.command_subject`), one reply each. A node that
does not answer (no responders, a timeout) is reported as the contract says a client
should treat it: ``unavailable``, retryable.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.errors import TransportError
from actors.nats import NatsTransport
from iceshop.wire import AUTHORIZATION, CommandKind, command_subject

__all__ = ["DemoClient", "UnexpectedReply"]

Reply = dict[str, Any]


class UnexpectedReply(Exception):
    """A reply other than the one the scenario expected."""

    def __init__(self, what: str, reply: Reply) -> None:
        if reply.get("ok"):
            text = f"{what}: expected an error, got ok {reply.get('data')}"
        else:
            error = reply.get("error") or {}
            text = f"{what}: {error.get('code')}: {error.get('message')}"
        super().__init__(text)
        self.reply = reply


class DemoClient:
    def __init__(
        self,
        transport: NatsTransport,
        *,
        prefix: str = "iceshop",
        timeout: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.transport = transport
        self.prefix = prefix
        self.timeout = timeout
        self.requests = 0
        #: Sent as ``Authorization: Bearer`` with every command, when given.
        self.headers = {AUTHORIZATION: f"Bearer {token}"} if token else None

    def subject(self, kind: CommandKind, **ids: str) -> str:
        return command_subject(kind, self.prefix, **ids)

    async def call(
        self, kind: CommandKind, body: dict[str, Any] | None = None, **ids: str
    ) -> Reply:
        """Send one command; the decoded reply (``ok`` true or false)."""
        subject = self.subject(kind, **ids)
        self.requests += 1
        try:
            raw, _ = await self.transport.request(
                subject, msgspec.json.encode(body or {}), self.headers, timeout=self.timeout
            )
        except TransportError as exc:
            return {
                "ok": False,
                "error": {"code": "unavailable", "message": str(exc), "retryable": True},
            }
        reply: Reply = msgspec.json.decode(raw)
        return reply

    async def ok(self, kind: CommandKind, body: dict[str, Any] | None = None, **ids: str) -> Reply:
        """The reply's ``data``; :class:`UnexpectedReply` on an error."""
        reply = await self.call(kind, body, **ids)
        if not reply.get("ok"):
            raise UnexpectedReply(_what(kind, ids), reply)
        data: Reply = reply["data"]
        return data

    async def error(self, kind: CommandKind, body: dict[str, Any] | None = None, **ids: str) -> str:
        """The error code; :class:`UnexpectedReply` when the command succeeded."""
        reply = await self.call(kind, body, **ids)
        if reply.get("ok"):
            raise UnexpectedReply(_what(kind, ids), reply)
        code: str = reply["error"]["code"]
        return code

    async def expect_error(
        self, code: str, kind: CommandKind, body: dict[str, Any] | None = None, **ids: str
    ) -> None:
        """Check that the command fails with ``code``."""
        reply = await self.call(kind, body, **ids)
        if reply.get("ok") or reply["error"]["code"] != code:
            raise UnexpectedReply(f"{_what(kind, ids)} (expected {code})", reply)


def _what(kind: CommandKind, ids: dict[str, str]) -> str:
    return f"{kind.value} {' '.join(ids.values())}".strip()

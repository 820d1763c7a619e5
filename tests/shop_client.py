"""A tiny contract client for tests: JSON in, the decoded reply out."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.nats import NatsTransport


class Client:
    def __init__(self, transport: NatsTransport, prefix: str = "iceshop") -> None:
        self.transport = transport
        self.prefix = prefix

    async def call(
        self,
        subject: str,
        body: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - passed to the NATS request
    ) -> dict[str, Any]:
        payload = raw if raw is not None else msgspec.json.encode(body or {})
        reply, _ = await self.transport.request(
            f"{self.prefix}.{subject}", payload, headers=headers, timeout=timeout
        )
        decoded: dict[str, Any] = msgspec.json.decode(reply)
        return decoded

    async def ok(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(subject, body)
        assert reply["ok"] is True, (subject, reply)
        data: dict[str, Any] = reply["data"]
        return data

    async def error(self, subject: str, body: dict[str, Any] | None = None, **kw: Any) -> str:
        reply = await self.call(subject, body, **kw)
        assert reply["ok"] is False, (subject, reply)
        code: str = reply["error"]["code"]
        return code

"""A tiny contract client for tests (JSON in, the decoded reply out), and a node on a
virtual clock driven through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from actors import VirtualClock
from actors.nats import NatsTransport
from actors.testkit import advance_to
from iceshop.node import ShopNode


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


class VirtualShop:
    """A node on a virtual clock and a client that speaks to it over NATS."""

    def __init__(self, node: ShopNode, clock: VirtualClock, client: Client) -> None:
        self.node = node
        self.clock = clock
        self.client = client

    async def advance(self, seconds: float) -> None:
        """Move the node's clock, firing each timer at its own time."""
        assert self.node.system is not None
        await advance_to(self.node.system, self.clock, self.clock.monotonic() + seconds)

    async def until(
        self,
        subject: str,
        body: dict[str, Any],
        check: Callable[[dict[str, Any]], bool],
        *,
        tick: float = 0.0,
    ) -> dict[str, Any]:
        """Ask until ``check(data)`` holds (events cross NATS asynchronously), moving the
        clock by ``tick`` between tries."""
        data: dict[str, Any] = {}
        for _ in range(150):
            data = await self.client.ok(subject, body)
            if check(data):
                return data
            if tick:
                await self.advance(tick)
            await anyio.sleep(0.02)
        raise AssertionError(f"{subject}: condition never held; last {data}")


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:  # noqa: ASYNC109
    """Poll ``check()`` (state that crosses NATS, not a timer) until it returns something
    true, and return that; fail naming ``what`` after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await anyio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g}s")

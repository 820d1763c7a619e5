"""The ``/metrics`` HTTP endpoint of a node.

Served by the small anyio HTTP/1.1 server of :mod:`iceshop.notify.http11`, as a task of
the node's own task group: it stops with the node, and nothing else in the process shares
it (prometheus-client's own server is a daemon thread on the global registry). Scrapes
are rare and small, so a handful of connections is plenty; a scraper that holds more
waits in the listen backlog rather than taking the node's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import anyio.abc
from prometheus_client import CONTENT_TYPE_LATEST

from iceshop.notify.http11 import HTTPServer, Request, Response

__all__ = ["METRICS_PATH", "MetricsEndpoint", "serve_metrics"]

METRICS_PATH: Final = "/metrics"


class MetricsEndpoint:
    """Answers ``GET /metrics`` with ``await scrape()``; anything else is 404 / 405."""

    def __init__(self, scrape: Callable[[], Awaitable[bytes]]) -> None:
        self._scrape = scrape
        self._server = HTTPServer(self.handle, max_body=4096, read_timeout=10.0, max_connections=8)

    async def handle(self, request: Request) -> Response:
        if request.path != METRICS_PATH:
            return Response(status=404, body=b"not found; try /metrics\n")
        if request.method not in ("GET", "HEAD"):
            return Response(status=405, body=b"GET only\n", headers=(("allow", "GET, HEAD"),))
        return Response(status=200, body=await self._scrape(), content_type=CONTENT_TYPE_LATEST)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` until cancelled; ``task_status`` gets the bound port.
        Raises :class:`~iceshop.notify.http11.BindFailed` when the port is taken."""
        await self._server.serve(host, port, task_status=task_status)


async def serve_metrics(
    stack: contextlib.AsyncExitStack,
    scrape: Callable[[], Awaitable[bytes]],
    host: str,
    port: int,
) -> int:
    """Serve ``GET /metrics`` on ``host:port`` in a task group of ``stack`` (it stops
    when the stack is left) and return the bound port; for the processes that run a part
    of a node apart (``iceshop notifier``, ``iceshop projector``). Raises
    :class:`~iceshop.notify.http11.BindFailed` when the port is taken."""
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    bound: int = await tg.start(MetricsEndpoint(scrape).serve, host, port)
    return bound

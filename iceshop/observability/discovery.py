"""NATS service discovery: each node announces itself as a ``nats.micro`` service.

``$SRV.PING.iceshop`` (and ``INFO``, ``STATS``) is answered by every running node, so
``nats micro ls`` or a monitoring script finds the nodes of a deployment without a list
of them. The service is named ``iceshop``, carries the package version, and its
metadata names the node and the subject prefix.

The command subjects are NOT micro endpoints: they are the runtime's own wildcard
subscriptions, tuned for throughput (see ``actors.nats``). The service has one endpoint
of its own, ``status`` on ``<prefix>.nodes.<node_id>.status``, answering this node's
runtime figures as JSON; its ``STATS`` data carries the same figures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service

from actors.nats import NatsTransport
from actors.stats import RuntimeStats

__all__ = ["SERVICE_NAME", "announce", "status_subject"]

SERVICE_NAME: Final = "iceshop"

log = structlog.get_logger("iceshop.discovery")


def status_subject(prefix: str, node_id: str) -> str:
    return f"{prefix}.nodes.{node_id}.status"


def _figures(stats: RuntimeStats | None) -> dict[str, Any]:
    if stats is None:
        return {}
    return {
        "actors_active": sum(k.active for k in stats.kinds),
        "messages_handled": stats.handled,
        "turns": stats.turns,
        "restarts": stats.restarts,
        "dead_letters": stats.dead_letters,
        "committed_events": stats.committed_events,
    }


async def announce(
    stack: contextlib.AsyncExitStack,
    transport: NatsTransport,
    *,
    node_id: str,
    prefix: str,
    version: str,
    stats: Callable[[], RuntimeStats | None],
) -> Service:
    """Register this node as service ``iceshop``; it is withdrawn when ``stack`` closes."""
    service = await add_service(
        transport.client,
        name=SERVICE_NAME,
        version=version,
        description="ICESHOP node: flash sales on an actor runtime",
        metadata={"node_id": node_id, "prefix": prefix},
        stats_handler=lambda _endpoint: _figures(stats()),
    )
    stack.push_async_callback(_withdraw, service)

    async def status(request: MicroRequest) -> None:
        body = {"node_id": node_id, "version": version, **_figures(stats())}
        await request.respond(msgspec.json.encode(body))

    await service.add_endpoint(
        name="status", subject=status_subject(prefix, node_id), handler=status
    )
    return service


async def _withdraw(service: Service) -> None:
    """Stop answering discovery; a connection already gone has withdrawn it anyway."""
    try:
        await service.stop()
    except Exception as exc:
        log.warning("service discovery not withdrawn cleanly", error=repr(exc))

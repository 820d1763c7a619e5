"""Observability of a node: counters, Prometheus metrics and NATS service discovery.

- :mod:`iceshop.observability.counters`: :class:`ShopCounters`, the shop's own counts
  (joins by outcome), kept by the actors that decide them.
- :mod:`iceshop.observability.metrics`: :class:`~.metrics.NodeMetrics`, the Prometheus
  registry of a node (or of an ``iceshop notifier`` / ``iceshop projector`` process),
  read from the runtime's, the shop's and the notifier's counters at scrape time.
- :mod:`iceshop.observability.endpoint`: the ``/metrics`` HTTP endpoint.
- :mod:`iceshop.observability.discovery`: the node as a ``nats.micro`` service.
- :mod:`iceshop.observability.tracing`: OpenTelemetry spans of the runtime's tracing
  hooks (imported only by a node that traces).
- :mod:`iceshop.observability.logs`: structlog configuration (JSON or console, the
  turn's context on every line, writes off the event loop).

Only the counters are imported here: the window actor needs them, and they must not pull
the metrics library or the HTTP server into every process that imports an actor.
"""

from __future__ import annotations

import contextlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from iceshop.observability.counters import ShopCounters

if TYPE_CHECKING:
    from actors.tracing import Tracer
    from iceshop.settings import Settings

__all__ = ["ShopCounters", "node_version", "start_tracing"]


def node_version() -> str:
    """The installed ``iceshop`` distribution's version ("0.0.0" when not installed)."""
    try:
        return version("iceshop")
    except PackageNotFoundError:
        return "0.0.0"


async def start_tracing(
    stack: contextlib.AsyncExitStack, settings: Settings, process_id: str
) -> Tracer | None:
    """The tracer ``settings`` ask for, shut down (its last spans flushed) when ``stack``
    unwinds; ``None`` for ``trace_exporter = "none"``, and then OpenTelemetry is not even
    imported. For a node, ``iceshop notifier`` and ``iceshop projector`` alike."""
    if settings.trace_exporter == "none":
        return None
    from iceshop.observability.tracing import open_tracer

    return await open_tracer(stack, settings, process_id)

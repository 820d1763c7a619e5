"""``iceshop notifier``: a notifier in a process of its own, as many as wanted.

Notification requests wait in the ``ICESHOP_NOTIFICATIONS`` stream; every notifier,
whether inside a node (``notifier = "node"``) or started by this command, binds the same
durable consumer. Only the holder of the sending number's send lease sends; the others
stand by and take over when it stops or dies, so more notifiers add availability, not
throughput (``notify_rate_per_s`` holds per sending number, however many notifiers run).
With ``notifier = "external"`` the nodes leave sending entirely to these processes.

Settings are the node's (``--config``, ``ICESHOP_<KEY>``): the subject prefix, the
provider and its settings, pacing and retries. The WhatsApp token comes from
``ICESHOP_WHATSAPP_TOKEN`` or ``whatsapp_token_file``, never from a flag. No lock is
taken on the data directory: several notifiers may share it (the ``log`` provider appends
whole lines to one file). It prints a ready line once it consumes (waiting for the
stream if no node created it yet), or once it stands by (its consumer line says so:
another notifier holds the send lease), and stops on SIGINT or SIGTERM: the notifier first
(sends in flight finish and are recorded, the others are handed back), then the
provider, then the connection.

With ``metrics_port`` set it serves ``GET /metrics`` on ``metrics_host:metrics_port``
(the node's settings: give each process on one host a port of its own, e.g.
``ICESHOP_METRICS_PORT``): ``iceshop_notifications_total{outcome}`` of this process and
``iceshop_node_info{role="notifier"}``. With ``trace_exporter`` set it records the
spans the notifier starts (it continues each request's trace).
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import anyio

from actors.errors import ActorsError
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import (
    add_process_arguments,
    configure_logging,
    process_id,
    serve_until_signalled,
)
from iceshop.cli.node import load
from iceshop.connection import nats_transport
from iceshop.notify import Notifier, start_notifier
from iceshop.observability import node_version, start_tracing
from iceshop.observability.endpoint import serve_metrics
from iceshop.observability.metrics import NodeMetrics
from iceshop.settings import Settings
from iceshop.wire import ShopError

__all__ = ["add_parser", "run", "start_external_notifier"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "notifier",
        parents=parents,
        help="run a notifier (sends notifications) apart from the node; start several to scale",
        description="Send the notification requests of the stream through the configured "
        "provider, sharing the work with every other notifier, until interrupted. "
        "Settings: defaults < --config TOML < ICESHOP_<KEY> variables < flags.",
    )
    add_process_arguments(
        p,
        data_help="data directory (setting data_dir)",
        config_help="TOML settings file (the node's)",
        node_id_help="a name for this process (setting node_id)",
    )
    p.set_defaults(handler=run)


async def start_external_notifier(stack: contextlib.AsyncExitStack, settings: Settings) -> Notifier:
    """Connect and run a notifier on ``stack``, and its ``/metrics`` when
    ``metrics_port`` is set; returns once it consumes."""
    name = f"iceshop-notifier-{settings.node_id}" if settings.node_id else "iceshop-notifier"
    try:
        transport = await stack.enter_async_context(
            nats_transport(settings, name=name)  # the node's NATS login
        )
        # Opened before the notifier: its last spans are flushed after it stops.
        tracer = await start_tracing(stack, settings, process_id(settings))
        notifier = await start_notifier(stack, transport, settings, wait=True, tracer=tracer)
        if settings.metrics_port:
            metrics = NodeMetrics(process_id(settings), version=node_version(), role="notifier")
            metrics.notifier = notifier
            await serve_metrics(stack, metrics.scrape, settings.metrics_host, settings.metrics_port)
        return notifier
    except ShopError as exc:  # a provider setting missing or wrong
        raise CliError(exc.message, EXIT_USAGE) from exc
    except ActorsError as exc:  # NATS unreachable, the metrics port taken
        raise CliError(f"notifier did not start: {exc}", EXIT_FAILED) from exc


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = load(
        args.config,
        {"nats_url": args.nats, "data_dir": args.data, "node_id": args.node_id},
    )

    async def start(stack: contextlib.AsyncExitStack) -> None:
        notifier = await start_external_notifier(stack, settings)
        print(f"  NATS      {settings.nats_url}", flush=True)
        print(f"  provider  {notifier.provider.name}", flush=True)
        rate = settings.notify_rate_per_s
        print(f"  rate      {rate:g}/s per sending number (send lease)", flush=True)
        lease = notifier.lease
        if lease is not None and not lease.owns():
            # Started while another notifier holds the send lease: nothing consumed yet.
            consumer = "none yet: standing by (another notifier holds the send lease)"
        else:
            consumer = f"{notifier.durable} on {notifier.stream}"
        print(f"  consumer  {consumer}", flush=True)
        print(f"  worker    {notifier.worker}", flush=True)
        if settings.metrics_port:
            port = settings.metrics_port
            print(f"  metrics   http://{settings.metrics_host}:{port}/metrics", flush=True)
        print("notifier ready", flush=True)

    def stopping() -> None:
        print("stopping the notifier", flush=True)

    anyio.run(serve_until_signalled, start, stopping)
    return EXIT_OK

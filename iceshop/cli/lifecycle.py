"""Running a long-lived command (``iceshop up``, ``iceshop node``) in the foreground.

``serve_until_signalled`` starts the command's pieces on an ``AsyncExitStack`` and waits
for SIGINT or SIGTERM; then the stack unwinds in reverse order, outside any cancelled
scope, so shutdown code runs to completion (the node finishes pending commits before the
NATS server it talks to stops). A signal that arrives while the pieces are still starting
cancels the start at once and unwinds what was already started: Ctrl-C never waits for a
slow start. Cleanup that must happen even then (stopping a child process) shields
itself from that cancellation.

``lock_data_dir`` takes an exclusive ``flock`` on the node's data directory for the life
of the process, so a second node on the same SQLite files is refused instead of both
writing. The kernel drops the lock when the process dies, even by SIGKILL.

Logs go to stderr (stdout is for what the command reports), at the level asked: JSON
lines, or readable ones on a terminal, written by a thread of their own so that a slow
stderr never blocks the event loop (``iceshop.observability.logs``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio

from iceshop.cli.errors import EXIT_USAGE, CliError
from iceshop.observability import logs
from iceshop.settings import Settings

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "add_log_arguments",
    "add_process_arguments",
    "configure_logging",
    "lock_data_dir",
    "process_id",
    "serve_until_signalled",
    "tune_gc",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
#: ``auto``: readable lines on a terminal, JSON lines otherwise.
LOG_FORMATS = logs.LOG_FORMATS

Start = Callable[[contextlib.AsyncExitStack], Awaitable[None]]


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, as every long-running command takes them."""
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="log lines as JSON, or readable; auto: readable on a terminal (default)",
    )


def add_process_arguments(
    p: argparse.ArgumentParser, *, data_help: str, config_help: str, node_id_help: str
) -> None:
    """The options of a process run against an existing NATS (node, projector,
    notifier): ``--nats``, ``--data``, ``--config``, ``--node-id`` and the log options."""
    p.add_argument(
        "--nats",
        default=argparse.SUPPRESS,
        metavar="URL[,URL...]",
        help="NATS server URL(s), comma separated (setting nats_url)",
    )
    p.add_argument("--data", metavar="DIR", help=data_help)
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--node-id", metavar="ID", help=node_id_help)
    add_log_arguments(p)


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Structured logs to stderr at ``level`` (one of ``LOG_LEVELS``), in format ``fmt``
    (one of ``LOG_FORMATS``)."""
    if fmt not in LOG_FORMATS:
        raise CliError(f"--log-format: one of {', '.join(LOG_FORMATS)}", EXIT_USAGE)
    logs.configure(level, "json" if fmt == "json" else "console" if fmt == "console" else "auto")


def process_id(settings: Settings) -> str:
    """A process's id in its metrics and spans when it runs a part of a node apart
    (``iceshop notifier``, ``iceshop projector``): ``node_id``, else ``<hostname>-<pid>``."""
    from iceshop.node.app import safe_node_id  # the node's rule for ids, loaded on use

    return safe_node_id(settings.node_id or f"{socket.gethostname()}-{os.getpid()}")


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running node; call it once the
    node has started.

    A started node holds many long-lived objects (actors, their state, timers, ids)
    that the collector would otherwise walk again and again, while its hot path
    allocates short-lived ones (messages, replies) by the hundred thousand a second: under
    a flash crowd the collections showed up as latency spikes (p99 of accepted joins
    ~120 ms with the defaults, 50-65 ms with this). Freezing what is alive after the start
    takes it out of the collector's generations, and a larger first-generation
    threshold makes young collections rarer. Process-wide on purpose: it runs only in
    the command line's own processes, never in the library."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def serve_until_signalled(start: Start, stopping: Callable[[], None]) -> None:
    """Run ``start(stack)``, then wait for SIGINT/SIGTERM, call ``stopping()`` and unwind.

    An exception from ``start`` propagates (after unwinding what it had started). The
    pieces ``start`` enters (task groups among them) stay in this task, inside one
    ``lifetime`` scope; only a signal during the start cancels it."""
    failures: list[Exception] = []
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            stop = anyio.Event()
            started = False
            lifetime = anyio.CancelScope()

            async def watch() -> None:
                async for _ in signals:
                    if not started and not stop.is_set():
                        stopping()
                        lifetime.cancel()
                    stop.set()

            tg.start_soon(watch)
            try:
                with lifetime:
                    async with contextlib.AsyncExitStack() as stack:
                        await start(stack)
                        started = True
                        await stop.wait()
                        stopping()
            except Exception as exc:  # re-raised below, not wrapped by the task group
                failures.append(exc)
            tg.cancel_scope.cancel()
    if failures:
        raise failures[0]


@contextlib.contextmanager
def lock_data_dir(path: Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs;
    ``name`` is the lock file in it (``iceshop projector`` holds one of its own)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CliError(f"cannot use data directory {path}: {exc}", EXIT_USAGE) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise CliError(
                f"data directory {path} is in use by another iceshop process (pid {holder})",
                EXIT_USAGE,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)

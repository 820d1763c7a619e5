"""One NATS connection, with the runtime's settings and error tree.

:class:`NatsTransport` wraps a nats-py client so the rest of the runtime sees a small
surface (request, publish, subscribe, JetStream) whose failures are always
:class:`~actors.errors.TransportError` subclasses.

Connection policy: the first connect is bounded by ``initial_connect_timeout`` (a node
that cannot reach NATS at start should say so, not hang); once connected the client
reconnects forever (``max_reconnect_attempts=-1``) and replays its subscriptions, because
a node that gave up on NATS after a broker restart would be dead while looking alive.
While disconnected, publishes are buffered up to ``pending_size`` bytes and fail with
:class:`~actors.errors.TransportError` beyond that.

:meth:`NatsTransport.close` drains: subscriptions stop taking new messages, the messages
already received are handled, buffered publishes are flushed, then the socket closes.

Credentials: ``user`` with ``password`` or ``password_file``, or ``token`` or
``token_file``. A file is read when connecting and again whenever the connection is lost
or the server refuses the login, so a rotated secret is picked up by the next reconnect
without a restart (read asynchronously: nats-py asks for the value synchronously, from a
cache). ``inbox_prefix`` sets where replies arrive (``_INBOX_<user>`` when the server
lets each user subscribe only below its own prefix). A login the server refuses at the
first connect fails at once with :class:`~actors.errors.NotPermitted` instead of
retrying until ``initial_connect_timeout``. The server refusing a publish or subscribe
does not close the connection: it is counted in :attr:`NatsTransport.permission_violations`,
logged, and kept in :attr:`NatsTransport.last_permission_violation`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from ..errors import (
    ActorsError,
    ConnectionClosed,
    NotPermitted,
    RequestTimeout,
    TransportError,
)
from .errors import is_login_refused, is_permission_violation, map_error, mapped_errors

__all__ = ["Msg", "MsgHandler", "NatsTransport", "Subscription"]

MsgHandler = Callable[[Msg], Awaitable[None]]
"""A subscription callback; nats-py awaits it once per message, in order."""

_log = structlog.get_logger(__name__)


class NatsTransport:
    """A NATS connection. Use as ``async with NatsTransport([url]) as transport: ...``
    or call :meth:`connect` / :meth:`close` yourself."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        name: str | None = None,
        connect_timeout: float = 2.0,
        initial_connect_timeout: float = 10.0,
        reconnect_time_wait: float = 0.5,
        max_reconnect_attempts: int = -1,
        ping_interval: float = 20.0,
        max_outstanding_pings: int = 3,
        drain_timeout: float = 5.0,
        pending_size: int = 8 * 1024 * 1024,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        inbox_prefix: str | None = None,
        password_file: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ValueError("at least one NATS server URL is required")
        self.name = name
        self._user = user
        self.initial_connect_timeout = initial_connect_timeout
        self._options: dict[str, Any] = {
            "name": name,
            "connect_timeout": connect_timeout,
            "reconnect_time_wait": reconnect_time_wait,
            "max_reconnect_attempts": max_reconnect_attempts,
            "ping_interval": ping_interval,
            "max_outstanding_pings": max_outstanding_pings,
            "drain_timeout": drain_timeout,
            "pending_size": pending_size,
            "user": user,
            "password": password,
            "token": token,
        }
        if password is not None and password_file is not None:
            raise ValueError("give password or password_file, not both")
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if password_file is not None and user is None:
            raise ValueError("password_file needs a user")
        #: Secrets read from files: option name -> path, and the values last read.
        self._secret_files: dict[str, Path] = {}
        self._secrets: dict[str, str] = {}
        for option, file in (("password", password_file), ("token", token_file)):
            if file is not None:
                self._secret_files[option] = Path(file)
                self._options[option] = self._secret_getter(option)
        if inbox_prefix is not None:
            self._options["inbox_prefix"] = inbox_prefix
        self.inbox_prefix = inbox_prefix
        self._nc: Client | None = None
        self._connecting = False
        self._connect_scope: anyio.CancelScope | None = None
        self._refused: NotPermitted | None = None
        self._last_error: BaseException | None = None
        self.slow_consumer_drops = 0
        """Messages nats-py dropped because a subscription's pending limits were hit."""
        self.permission_violations = 0
        """Publishes and subscriptions the server refused for lack of permission."""
        self.last_permission_violation: NotPermitted | None = None

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, trying the servers until ``initial_connect_timeout`` passes.

        Raises :class:`~actors.errors.TransportError` naming the last error seen."""
        if self._nc is not None and not self._nc.is_closed:
            return
        await self._read_secrets(strict=True)
        nc = Client()
        self._connecting, self._refused = True, None
        try:
            with anyio.fail_after(self.initial_connect_timeout), mapped_errors("connect"):
                with anyio.CancelScope() as scope:
                    self._connect_scope = scope
                    await nc.connect(
                        servers=self.servers,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        closed_cb=self._on_closed,
                        **self._options,
                    )
                if self._refused is not None:  # the login was refused: retrying cannot help
                    raise self._refused
        except TimeoutError as exc:
            await self._abandon(nc)
            last = self._last_error
            raise TransportError(
                f"could not connect to {', '.join(self.servers)} within "
                f"{self.initial_connect_timeout:g}s: {last or 'no answer'}"
            ) from (last or exc)
        except BaseException:
            await self._abandon(nc)
            raise
        finally:
            self._connecting = False
            self._connect_scope = None
        self._nc = nc

    async def close(self) -> None:
        """Drain and close. Idempotent; never raises for an already closed connection."""
        nc, self._nc = self._nc, None
        if nc is None or nc.is_closed:
            return
        with anyio.CancelScope(shield=True):
            try:
                await nc.drain()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                _log.debug("nats drain failed; closing", error=repr(exc))
                await self._abandon(nc)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> Client:
        """The underlying nats-py client (for what this class does not wrap).

        Raises :class:`~actors.errors.ConnectionClosed` when not connected."""
        if self._nc is None or self._nc.is_closed:
            raise ConnectionClosed("the NATS transport is not connected")
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def max_payload(self) -> int:
        return int(self.client.max_payload)

    @property
    def last_error(self) -> BaseException | None:
        return self._last_error

    # -- messaging ---------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, sent to nats-py
    ) -> tuple[bytes, dict[str, str]]:
        """Send a request and return the reply's ``(payload, headers)``.

        Raises :class:`~actors.errors.NoResponders` when nobody subscribes,
        :class:`~actors.errors.RequestTimeout` when no reply came in ``timeout`` seconds."""
        with mapped_errors(f"request {subject}"):
            msg = await self.client.request(
                subject,
                payload,
                timeout=timeout,
                headers=dict(headers) if headers else None,
            )
        return msg.data, dict(msg.headers) if msg.headers else {}

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        headers: Mapping[str, str] | None = None,
        reply: str = "",
    ) -> None:
        """Publish (buffered; the client flushes in the background)."""
        with mapped_errors(f"publish {subject}"):
            await self.client.publish(
                subject,
                payload,
                reply=reply,
                headers=dict(headers) if headers else None,
            )

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a PING's deadline
        """Return once the server has processed everything sent before this call
        (subscriptions included), or raise :class:`~actors.errors.RequestTimeout`."""
        nc = self.client
        try:
            with anyio.fail_after(timeout), mapped_errors("flush"):
                # nats-py writes its PING straight to the socket, ahead of commands still
                # waiting for its flusher task, so its PONG alone proves nothing about
                # them. Push those out first; then the PONG orders after them.
                await nc._flush_pending(force_flush=True)
                await nc.flush(timeout=timeout)  # type: ignore[arg-type]
        except TimeoutError as exc:
            if isinstance(exc, ActorsError):
                raise
            raise RequestTimeout(f"flush: no answer within {timeout:g}s") from exc

    async def subscribe(
        self,
        subject: str,
        cb: MsgHandler,
        queue: str = "",
        *,
        pending_msgs_limit: int = 65_536,
        pending_bytes_limit: int = 64 * 1024 * 1024,
    ) -> Subscription:
        """Subscribe with a callback. Beyond the pending limits nats-py drops messages
        (counted in :attr:`slow_consumer_drops`) instead of queueing without bound.
        Await :meth:`flush` afterwards when others must find the subscription at once."""
        with mapped_errors(f"subscribe {subject}"):
            return await self.client.subscribe(
                subject,
                queue=queue,
                cb=cb,
                pending_msgs_limit=pending_msgs_limit,
                pending_bytes_limit=pending_bytes_limit,
            )

    async def unsubscribe(self, sub: Subscription, *, drain: bool = True) -> None:
        """Stop a subscription; with ``drain`` the messages already received are handled
        first. A closed connection counts as unsubscribed."""
        if self._nc is None or self._nc.is_closed:
            return
        with mapped_errors(f"unsubscribe {sub.subject}"):
            if drain:
                await sub.drain()  # type: ignore[no-untyped-call]
            else:
                await sub.unsubscribe()

    def new_inbox(self) -> str:
        return str(self.client.new_inbox())

    def jetstream(
        self, *, timeout: float = 5.0, publish_async_max_pending: int = 4000
    ) -> JetStreamContext:
        """A JetStream context on this connection. Its calls raise nats-py errors: wrap
        them in :func:`actors.nats.errors.mapped_errors`."""
        return self.client.jetstream(
            timeout=timeout, publish_async_max_pending=publish_async_max_pending
        )

    # -- credentials -------------------------------------------------------------------

    def _secret_getter(self, option: str) -> Callable[[], str]:
        def get() -> str:
            return self._secrets[option]

        return get

    async def _read_secrets(self, *, strict: bool) -> None:
        """(Re)read the secrets kept in files. ``strict``: an unreadable or empty file is
        an error; otherwise the value read before is kept (and the failure logged)."""
        for option, path in self._secret_files.items():
            try:
                value = (await anyio.Path(path).read_text(encoding="utf-8")).strip()
                if not value:
                    raise ValueError("the file is empty")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                if strict or option not in self._secrets:
                    raise TransportError(f"NATS {option} file {path}: {exc}") from exc
                _log.warning("nats secret file unreadable; keeping the old value", file=str(path))
                continue
            self._secrets[option] = value

    # -- callbacks ---------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        if is_permission_violation(exc):
            self.permission_violations += 1
            mapped = map_error(exc)
            assert isinstance(mapped, NotPermitted)
            self.last_permission_violation = mapped
            if self.permission_violations & (self.permission_violations - 1) == 0:
                _log.warning("nats permission violation", error=str(mapped), name=self.name)
            return
        if is_login_refused(exc):
            self._last_error = exc
            if self._connecting and self._connect_scope is not None:
                self._refused = NotPermitted(
                    f"connect: the NATS server refused the login"
                    f"{f' of user {self._user!r}' if self._user else ''} (authorization violation)"
                )
                self._connect_scope.cancel()
                return
            _log.warning("nats refused the login; re-reading credentials", name=self.name)
            await self._read_secrets(strict=False)
            return
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumer_drops += 1
            if self.slow_consumer_drops & (self.slow_consumer_drops - 1) == 0:
                # Log the 1st, 2nd, 4th, 8th, ... drop: visible without flooding.
                _log.warning(
                    "nats slow consumer: message dropped",
                    subject=exc.subject,
                    drops=self.slow_consumer_drops,
                )
            return
        self._last_error = exc
        if isinstance(exc, nats.errors.Error | OSError | TimeoutError):
            _log.debug("nats error", error=repr(exc), name=self.name)
        else:
            # nats-py reports exceptions escaping a subscription callback here: a bug.
            _log.error("nats callback failed", error=repr(exc), name=self.name)

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            _log.warning("nats disconnected; reconnecting", name=self.name)
            await self._read_secrets(strict=False)  # a rotated secret counts from now on

    async def _on_closed(self) -> None:
        nc = self._nc
        if nc is not None and nc.is_closed:  # not by close(): nats-py gave up for good
            _log.error(
                "nats connection closed for good; this process must be restarted",
                name=self.name,
                error=repr(nc.last_error) if nc.last_error else None,
            )

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url.geturl() if nc is not None and nc.connected_url else None
        _log.info("nats reconnected", name=self.name, url=url)

    @staticmethod
    async def _abandon(nc: Client) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await nc.close()
            except (nats.errors.Error, OSError, AssertionError) as exc:
                _log.debug("nats close failed", error=repr(exc))

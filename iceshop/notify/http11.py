"""A tiny HTTP/1.1 server on anyio and h11, for webhooks.

Webhook callbacks are small POSTs from one provider, so a framework would be mostly weight:
what they need is a server that cannot be starved. This one is built for that:

- every connection is a task of the server's own task group, so cancelling
  :meth:`HTTPServer.serve` ends them all and nothing is orphaned;
- at most ``max_connections`` are served at once; the next client waits in the kernel's
  listen backlog until a slot frees (no unbounded queue of accepted sockets);
- a request (its head and its body) must arrive within ``read_timeout``, and so must the
  next request on a kept-alive connection, so a slow or idle client loses its own
  connection and never holds up another one;
- the body is bounded by ``max_body``: a declared ``Content-Length`` over the limit is
  answered ``413`` before a byte of it is read (and before ``100 Continue``), a chunked body
  as soon as it grows past the limit;
- keep-alive as HTTP/1.1 defines it (h11 does the bookkeeping); after an early answer the
  server closes with a short lingering read, so the client sees the answer rather than a
  reset.

The handler sees the whole request and returns the whole response; it never touches the
socket. An exception from the handler becomes ``500``; cancellation is never swallowed.

::

    ActorsError
    └── BindFailed            the listening socket could not be opened (port taken, ...)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Final

import anyio
import anyio.abc
import h11
import msgspec
import structlog
from anyio.abc import SocketAttribute

from actors.errors import ActorsError

__all__ = ["BindFailed", "HTTPServer", "Handler", "Request", "Response"]

log = structlog.get_logger("iceshop.notify.http")

_RECEIVE_CHUNK: Final = 64 * 1024
#: How long, and how much, a closing connection keeps reading so the client is not reset.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 1024 * 1024


class BindFailed(ActorsError):
    """The server could not listen on the requested address."""


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """One complete request. Header names are lower case, values raw bytes."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    peer: str

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """One complete response; ``close`` ends the connection after it."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


def _plain(status: HTTPStatus, *, close: bool = False) -> Response:
    return Response(status=status.value, body=status.phrase.encode(), close=close)


class _Closed(Exception):
    """The client went away; nothing more to read or write."""


class HTTPServer:
    """Serves ``handler`` over HTTP/1.1; see the module docstring."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = 256 * 1024,
        read_timeout: float = 30.0,
        max_connections: int = 64,
        max_head: int = 16 * 1024,
    ) -> None:
        if max_body < 0:
            raise ValueError("max_body must not be negative")
        if max_head <= 0 or max_connections <= 0:
            raise ValueError("max_head and max_connections must be positive")
        if not (read_timeout > 0 and math.isfinite(read_timeout)):
            raise ValueError("read_timeout must be a positive number of seconds")
        self._handler = handler
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.max_head = max_head

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (``0``: a free port) and serve until cancelled.

        ``task_status.started`` receives the bound port.
        """
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            raise BindFailed(f"cannot listen on {host}:{port}: {exc}") from exc
        slots = anyio.Semaphore(self.max_connections)
        async with listener, anyio.create_task_group() as tg:
            bound = listener.extra(SocketAttribute.local_port)
            log.info("http server listening", host=host, port=bound)
            # A host name may resolve to several addresses (IPv4 and IPv6): one accept
            # loop each, all sharing the one connection limit.
            for one in listener.listeners:
                if not isinstance(one, anyio.abc.SocketListener):  # pragma: no cover
                    raise TypeError(f"unexpected listener {one!r}")
                tg.start_soon(self._accept, one, slots, tg)
            task_status.started(bound)

    async def _accept(
        self,
        listener: anyio.abc.SocketListener,
        slots: anyio.Semaphore,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except BaseException:
                slots.release()
                raise
            tg.start_soon(self._connection, stream, slots)

    async def _connection(self, stream: anyio.abc.SocketStream, slots: anyio.Semaphore) -> None:
        try:
            async with stream:
                peer = _peer(stream)
                try:
                    await self._serve_connection(stream, peer)
                except (_Closed, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                except Exception:
                    log.exception("http connection failed", peer=peer)
        finally:
            slots.release()

    async def _serve_connection(self, stream: anyio.abc.SocketStream, peer: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        while True:
            received: Request | Response | None = None
            with anyio.move_on_after(self.read_timeout) as reading:
                try:
                    received = await self._read_request(conn, stream, peer)
                except h11.RemoteProtocolError as exc:
                    received = _plain(HTTPStatus(exc.error_status_hint), close=True)
            if reading.cancelled_caught:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # an idle keep-alive connection: close quietly
                received = _plain(HTTPStatus.REQUEST_TIMEOUT, close=True)
            if received is None:
                return  # the client closed between requests
            head_only = False
            if isinstance(received, Request):
                head_only = received.method == "HEAD"
                response = await self._handle(received)
            else:
                response = received
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            with anyio.fail_after(self.read_timeout):
                await _send_response(conn, stream, response, head_only=head_only)
            if not _reusable(conn):
                await _linger(conn, stream)
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, peer: str
    ) -> Request | Response | None:
        """The next request, an early answer (``413``), or ``None`` if the client left."""
        event = await _next_event(conn, stream)
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
        declared = _content_length(event.headers)
        if declared is not None and declared > self.max_body:
            return _plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=True)
        body = bytearray()
        while True:
            part = await _next_event(conn, stream)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.max_body:
                    return _plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=True)
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise _Closed
        path, _, query = event.target.decode("latin-1").partition("?")
        return Request(
            method=event.method.decode("latin-1"),
            path=path,
            query=query,
            headers=tuple((bytes(name), bytes(value)) for name, value in event.headers),
            body=bytes(body),
            peer=peer,
        )

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            log.exception(
                "http handler failed", method=request.method, path=request.path, peer=request.peer
            )
            return _plain(HTTPStatus.INTERNAL_SERVER_ERROR)


async def _send_response(
    conn: h11.Connection,
    stream: anyio.abc.SocketStream,
    response: Response,
    *,
    head_only: bool = False,
) -> None:
    """Send ``response`` whole; for a ``HEAD`` request only its head."""
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
    ]
    if response.close:
        headers.append(("connection", "close"))
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if response.body and not head_only:
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
    data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send(data)


async def _next_event(conn: h11.Connection, stream: anyio.abc.SocketStream) -> h11.Event:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            raise h11.RemoteProtocolError("protocol switch or pipelining is not supported")
        if conn.they_are_waiting_for_100_continue:
            interim = h11.InformationalResponse(status_code=100, headers=[])
            await stream.send(conn.send(interim) or b"")
        try:
            data = await stream.receive(_RECEIVE_CHUNK)
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _reusable(conn: h11.Connection) -> bool:
    """Whether both sides finished one exchange and may start the next (keep-alive)."""
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _linger(conn: h11.Connection, stream: anyio.abc.SocketStream) -> None:
    """Read what the client still sends (bounded), so closing does not reset the answer."""
    if conn.their_state in (h11.DONE, h11.CLOSED, h11.MUST_CLOSE):
        return
    try:
        await stream.send_eof()
        left = _LINGER_BYTES
        with anyio.move_on_after(_LINGER_SECONDS):
            while left > 0:
                left -= len(await stream.receive(_RECEIVE_CHUNK))
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


def _peer(stream: anyio.abc.SocketStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)

"""A local stand-in for the WhatsApp Business Cloud API, for tests and benchmarks.

It answers ``POST /{version}/{phone_number_id}/messages`` the way the Cloud API does
(``{"messages": [{"id": "wamid..."}]}``, or a Graph error body
``{"error": {"code", "message", ...}}``), checks the Bearer token (``401``, code 190)
and the path (``404``), and records every request's arrival time and every message it
accepted. It runs on the project's own HTTP server (anyio + h11), on a free loopback
port, inside the caller's event loop::

    async with FakeCloudApi(token="t", phone_number_id="100") as api:
        api.fail_next(5, status=429, code=130429)       # a rate-limit storm
        api.fail_recipient("+905550000009", code=131026) # this one can never receive
        api.delay_s = 0.2                                # slow answers
        api.hold_after(10)                               # take 10, then hang the rest
        ...                                              # point a provider at api.base
        await api.wait_accepted(20)

A message is *accepted* when the fake decides to answer it ``200``: after its delay,
never for a held or failed request. A held request waits until :meth:`release`, then
is answered ``503`` without being accepted: for a client that died meanwhile (the kill
test) that is a request the provider never took.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import msgspec

from iceshop.notify.http11 import HTTPServer, Request, Response

__all__ = ["Accepted", "FakeCloudApi", "Scripted", "max_in_window"]

_encoder = msgspec.json.Encoder()


class _Language(msgspec.Struct):
    code: str


class _Parameter(msgspec.Struct):
    text: str = ""


class _Component(msgspec.Struct):
    type: str
    parameters: list[_Parameter] = msgspec.field(default_factory=list)


class _Template(msgspec.Struct):
    name: str
    language: _Language
    components: list[_Component] = msgspec.field(default_factory=list)


class _Message(msgspec.Struct):
    messaging_product: str
    to: str
    type: str
    template: _Template
    recipient_type: str = "individual"
    biz_opaque_callback_data: str | None = None


_decode_message = msgspec.json.Decoder(_Message).decode


@dataclass(frozen=True)
class Accepted:
    """A message the fake took."""

    notification_id: str | None
    to: str
    template: str
    language: str
    params: tuple[str, ...]
    message_id: str
    arrived: float
    """``time.monotonic()`` when its request arrived."""
    accepted: float


@dataclass(frozen=True)
class Scripted:
    """An error answer: ``status`` with Graph error ``code`` (``None``: no error body)."""

    status: int
    code: int | None = None
    message: str = "scripted error"
    retry_after: str | None = None


@dataclass
class _Hold:
    after: int
    released: anyio.Event = field(default_factory=anyio.Event)


def max_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` within any ``window_s`` (half-open) window."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


class FakeCloudApi:
    """See the module docstring. ``base`` is the URL to give the provider."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        phone_number_id: str = "100200300",
        version: str = "v21.0",
        host: str = "127.0.0.1",
        max_connections: int = 256,
    ) -> None:
        self.token = token
        self.phone_number_id = phone_number_id
        self.version = version
        self.host = host
        self.port = 0
        self.delay_s = 0.0
        """Seconds every answer waits (a slow API)."""
        self.arrivals: list[float] = []
        """``time.monotonic()`` of every request with a valid token and path."""
        self.accepted: list[Accepted] = []
        self.errors: list[tuple[str, int, int | None]] = []
        """``(to, status, code)`` of every scripted error answered."""
        self.held = 0
        """Requests currently held."""
        self._server = HTTPServer(self._handle, max_connections=max_connections)
        self._script: deque[Scripted] = deque()
        self._recipients: dict[str, Scripted] = {}
        self._hold: _Hold | None = None
        self._ids = itertools.count(1)
        self._changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self.port = await self._tg.start(self._server.serve, self.host, 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            self.release()
            tg.cancel_scope.cancel()
            await tg.__aexit__(exc_type, exc, tb)

    # -- scripting ----------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        *,
        status: int = 429,
        code: int | None = 130429,
        message: str = "Rate limit hit",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with this error (a storm)."""
        self._script.extend(Scripted(status, code, message, retry_after) for _ in range(n))

    def fail_recipient(
        self, to: str, *, status: int = 400, code: int | None = 131026, message: str = ""
    ) -> None:
        """Answer every message to ``to`` (E.164, with or without ``+``) with this error."""
        self._recipients[to.removeprefix("+")] = Scripted(
            status, code, message or "Message undeliverable"
        )

    def hold_after(self, n: int) -> None:
        """Accept ``n`` messages in all, then hold every further request until
        :meth:`release`."""
        self._hold = _Hold(n)

    def release(self) -> None:
        """Answer the held requests ``503`` (not accepted) and stop holding."""
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.released.set()

    # -- waiting --------------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_until(self, predicate: Any) -> None:
        """Return once ``predicate(self)`` holds; checked on every arrival and answer."""
        while not predicate(self):
            await self._changed.wait()

    async def wait_accepted(self, n: int) -> None:
        await self.wait_until(lambda api: len(api.accepted) >= n)

    def accepted_ids(self) -> list[str | None]:
        return [a.notification_id for a in self.accepted]

    def max_in_window(self, window_s: float) -> int:
        """The most requests that arrived within any ``window_s`` (half-open) window."""
        return max_in_window(self.arrivals, window_s)

    def per_second(self) -> list[int]:
        """Requests that arrived in each whole second after the first arrival, which is
        the reference and counted in none: ``(0, 1]``, ``(1, 2]``, ... (the last second
        may be partial). Like ``(n - 1) / (last - first)``, this counts the intervals
        after the first request, so a steady ``r`` per second gives ``r`` per window
        however long the first request took to arrive (its connection is opened)."""
        if not self.arrivals:
            return []
        first = min(self.arrivals)
        counts = [0] * max(1, math.ceil(max(self.arrivals) - first))
        for t in self.arrivals:
            if t > first:
                counts[math.ceil(t - first) - 1] += 1
        return counts

    # -- serving ------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._answer(request)
        finally:
            self._notify()

    async def _answer(self, request: Request) -> Response:
        arrived = time.monotonic()
        if request.header(b"authorization") != f"Bearer {self.token}".encode():
            return _error(401, 190, "Invalid OAuth access token")
        if request.method != "POST" or request.path != (
            f"/{self.version}/{self.phone_number_id}/messages"
        ):
            return _error(404, 100, f"Unknown path {request.path}")
        self.arrivals.append(arrived)
        self._notify()
        try:
            message = _decode_message(request.body)
        except msgspec.DecodeError as exc:
            return _error(400, 100, f"Invalid parameter: {exc}")
        hold = self._hold
        if hold is not None and len(self.accepted) >= hold.after:
            self.held += 1
            self._notify()
            try:
                await hold.released.wait()
            finally:
                self.held -= 1
            return _error(503, None, "held, then dropped")
        if self.delay_s > 0:
            await anyio.sleep(self.delay_s)
        scripted = self._recipients.get(message.to)
        if scripted is None and self._script:
            scripted = self._script.popleft()
        if scripted is not None:
            self.errors.append((message.to, scripted.status, scripted.code))
            return _error(scripted.status, scripted.code, scripted.message, scripted.retry_after)
        message_id = f"wamid.fake{next(self._ids):08d}"
        body = next((c for c in message.template.components if c.type == "body"), None)
        self.accepted.append(
            Accepted(
                notification_id=message.biz_opaque_callback_data,
                to=message.to,
                template=message.template.name,
                language=message.template.language.code,
                params=tuple(p.text for p in body.parameters) if body else (),
                message_id=message_id,
                arrived=arrived,
                accepted=time.monotonic(),
            )
        )
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": message.to, "wa_id": message.to}],
            "messages": [{"id": message_id, "message_status": "accepted"}],
        }
        return Response(status=200, body=_encoder.encode(answer), content_type="application/json")


def _error(status: int, code: int | None, message: str, retry_after: str | None = None) -> Response:
    body: dict[str, Any] = {}
    if code is not None:
        body = {
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": message},
                "fbtrace_id": "fake",
            }
        }
    headers = (("retry-after", retry_after),) if retry_after is not None else ()
    return Response(
        status=status,
        body=_encoder.encode(body) if body else b"",
        content_type="application/json",
        headers=headers,
    )

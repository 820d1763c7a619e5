"""The WhatsApp delivery-status webhook: signed callbacks in, :class:`StatusUpdate` out.

The Cloud API reports each message's progress (``sent``, ``delivered``, ``read``,
``failed``) by POSTing JSON to a webhook. This module is that webhook, and nothing more:

- **Authenticity first.** A callback counts only if ``X-Hub-Signature-256`` is
  ``sha256=`` + the hex HMAC-SHA256 of the *raw* body under the app secret, compared in
  constant time. Anything else is ``401`` and is never parsed, let alone delivered.
- **Subscribe handshake.** ``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``
  echoes the challenge when the token matches (``200``), else ``403``.
- **Parse, hand over, answer.** Every status of a verified body goes to ``on_status`` in
  body order, then the provider gets ``200``. The receiver keeps no state: the provider
  delivers at least once and in no particular order, and the store's monotone merge makes
  duplicates and late ``sent`` after ``read`` harmless. That is also why a failing
  ``on_status`` answers ``500``: the provider sends the whole batch again, and what was
  already handed over arrives as a duplicate.
- **Lenient where the provider grows, strict where it matters.** Unknown fields are
  ignored (the provider adds fields over time), as are changes that are not ``messages``
  and status values other than the four above; a body that is not JSON or not shaped like
  a webhook is ``400``, one over ``max_body`` is ``413``.

Transport concerns (timeouts, keep-alive, connection limits, body limit) live in
:mod:`iceshop.notify.http11`. Logs never carry the secret, the signature or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qs

import anyio
import anyio.abc
import msgspec
import structlog

from actors.errors import ActorsError
from iceshop.notify.http11 import HTTPServer, Request, Response
from iceshop.notify.store import StatusName, StatusUpdate

__all__ = [
    "InvalidWebhookBody",
    "OnStatus",
    "StatusBatch",
    "StatusReceiver",
    "parse_statuses",
    "sign_body",
]

log = structlog.get_logger("iceshop.notify.receiver")

OnStatus = Callable[[StatusUpdate], Awaitable[None]]

#: The statuses handed over; others (the provider has had e.g. ``deleted``) are skipped.
_STATUSES: Final[dict[str, StatusName]] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
}

_SIGNATURE_HEADER: Final = b"x-hub-signature-256"
_SIGNATURE_PREFIX: Final = "sha256="


class InvalidWebhookBody(ActorsError):
    """The body is not JSON, or not shaped like a Cloud API webhook."""


class StatusBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What one callback body carried: the statuses to hand over, and the skipped ones."""

    updates: tuple[StatusUpdate, ...]
    skipped: tuple[str, ...] = ()


# The webhook's shape, as far as statuses go. msgspec ignores fields not declared here.


class _Error(msgspec.Struct, frozen=True):
    code: int | None = None
    title: str | None = None


class _Status(msgspec.Struct, frozen=True):
    id: str
    status: str
    timestamp: str | int
    recipient_id: str = ""
    biz_opaque_callback_data: str | None = None
    errors: tuple[_Error, ...] = ()


class _Value(msgspec.Struct, frozen=True):
    statuses: tuple[_Status, ...] = ()


class _Change(msgspec.Struct, frozen=True):
    field: str = ""
    # Kept raw: other fields carry other shapes, decoded only for ``messages``.
    value: msgspec.Raw = msgspec.Raw()


class _Entry(msgspec.Struct, frozen=True):
    id: str = ""
    changes: tuple[_Change, ...] = ()


class _Envelope(msgspec.Struct, frozen=True):
    object: str = ""
    entry: tuple[_Entry, ...] = ()


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_VALUE: Final = msgspec.json.Decoder(_Value)


def sign_body(app_secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return _SIGNATURE_PREFIX + hmac.new(app_secret, body, hashlib.sha256).hexdigest()


def parse_statuses(body: bytes) -> StatusBatch:
    """The delivery statuses of one webhook body, in body order.

    Raises :class:`InvalidWebhookBody` if the body is not JSON or not webhook-shaped.
    """
    try:
        envelope = _ENVELOPE.decode(body)
        if envelope.object != "whatsapp_business_account":
            return StatusBatch(updates=())
        values = [
            _VALUE.decode(change.value)
            for entry in envelope.entry
            for change in entry.changes
            if change.field == "messages" and change.value
        ]
    except msgspec.DecodeError as exc:
        raise InvalidWebhookBody(str(exc)) from exc
    updates: list[StatusUpdate] = []
    skipped: list[str] = []
    for value in values:
        for status in value.statuses:
            name = _STATUSES.get(status.status)
            if name is None:
                skipped.append(status.status)
                continue
            first_error = status.errors[0] if status.errors else _Error()
            updates.append(
                StatusUpdate(
                    message_id=status.id,
                    notification_id=status.biz_opaque_callback_data or None,
                    status=name,
                    at=_epoch(status.timestamp),
                    recipient=status.recipient_id,
                    error_code=first_error.code,
                    error_title=first_error.title,
                )
            )
    return StatusBatch(updates=tuple(updates), skipped=tuple(skipped))


def _epoch(timestamp: str | int) -> float:
    try:
        at = float(timestamp)
    except ValueError as exc:
        raise InvalidWebhookBody(f"status timestamp {timestamp!r} is not a number") from exc
    if not math.isfinite(at) or at < 0:
        raise InvalidWebhookBody(f"status timestamp {timestamp!r} is not a time")
    return at


def _text(status: HTTPStatus, body: str | None = None) -> Response:
    return Response(status=status.value, body=(body or status.phrase).encode())


class StatusReceiver:
    """The delivery-status webhook endpoint; see the module docstring."""

    def __init__(
        self,
        *,
        app_secret: bytes,
        verify_token: str,
        on_status: OnStatus,
        path: str = "/whatsapp/webhook",
        max_body: int = 256 * 1024,
        read_timeout: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        if not app_secret:
            raise ValueError("app_secret must not be empty")
        if not verify_token:
            raise ValueError("verify_token must not be empty")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        self._app_secret = app_secret
        self._verify_token = verify_token.encode()
        self._on_status = on_status
        self.path = path
        self._server = HTTPServer(
            self.handle,
            max_body=max_body,
            read_timeout=read_timeout,
            max_connections=max_connections,
        )

    def __repr__(self) -> str:  # never show the secret
        return f"StatusReceiver(path={self.path!r})"

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (``0``: a free one, passed to ``task_status.started``)
        and serve until cancelled."""
        await self._server.serve(host, port, task_status=task_status)

    async def handle(self, request: Request) -> Response:
        """Answer one complete request (the HTTP server calls this)."""
        if request.path != self.path:
            return _text(HTTPStatus.NOT_FOUND)
        if request.method == "GET":
            return self._handshake(request)
        if request.method == "POST":
            return await self._callback(request)
        return Response(
            status=HTTPStatus.METHOD_NOT_ALLOWED.value,
            body=HTTPStatus.METHOD_NOT_ALLOWED.phrase.encode(),
            headers=(("allow", "GET, POST"),),
        )

    def _handshake(self, request: Request) -> Response:
        try:
            params = parse_qs(request.query, keep_blank_values=True, max_num_fields=16)
        except ValueError:
            return _text(HTTPStatus.BAD_REQUEST, "bad query")
        mode = params.get("hub.mode", [""])[0]
        token = params.get("hub.verify_token", [""])[0].encode()
        challenge = params.get("hub.challenge")
        if mode != "subscribe" or not hmac.compare_digest(token, self._verify_token):
            log.warning("webhook subscription refused", peer=request.peer, mode=mode)
            return _text(HTTPStatus.FORBIDDEN)
        if not challenge:
            return _text(HTTPStatus.BAD_REQUEST, "missing hub.challenge")
        log.info("webhook subscription verified", peer=request.peer)
        return _text(HTTPStatus.OK, challenge[0])

    async def _callback(self, request: Request) -> Response:
        provided = request.header(_SIGNATURE_HEADER)
        if provided is None:
            log.warning("webhook signature missing", peer=request.peer, size=len(request.body))
            return _text(HTTPStatus.UNAUTHORIZED, "missing signature")
        expected = sign_body(self._app_secret, request.body).encode()
        if not hmac.compare_digest(provided.strip().lower(), expected):
            log.warning("webhook signature mismatch", peer=request.peer, size=len(request.body))
            return _text(HTTPStatus.UNAUTHORIZED, "bad signature")
        try:
            batch = parse_statuses(request.body)
        except InvalidWebhookBody as exc:
            log.warning("webhook body rejected", peer=request.peer, reason=str(exc))
            return _text(HTTPStatus.BAD_REQUEST, "body is not a webhook JSON object")
        for done, update in enumerate(batch.updates):
            try:
                await self._on_status(update)
            except Exception:
                log.exception(
                    "status handler failed; answering 500 so the provider sends again",
                    count=len(batch.updates),
                    delivered=done,
                    message_id=update.message_id,
                )
                return _text(HTTPStatus.INTERNAL_SERVER_ERROR)
        log.info(
            "delivery statuses received",
            count=len(batch.updates),
            statuses=dict(Counter(update.status for update in batch.updates)),
            skipped=len(batch.skipped),
        )
        return _text(HTTPStatus.OK)

"""The ``whatsapp`` provider: template messages through the WhatsApp Business Cloud API.

One message is one request::

    POST {api_base}/{api_version}/{phone_number_id}/messages
    Authorization: Bearer <token>
    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "9055...",
     "type": "template",
     "template": {"name": ..., "language": {"code": "tr"},
                  "components": [{"type": "body", "parameters": [{"type": "text", ...}]}]},
     "biz_opaque_callback_data": "<notification_id>"}

``biz_opaque_callback_data`` comes back in the delivery-status callbacks, so a status
names our notification even before we stored the provider's message id (``wamid``,
read from ``messages[0].id`` of a 2xx answer).

**Errors.** The Graph API answers errors as ``{"error": {"code", "message", ...}}``. The
``code`` decides first, then the HTTP status:

=========================== =========== =============================================
code / status               verdict     meaning
=========================== =========== =============================================
130429                      retry       throughput limit of the number reached
131056                      retry       too many messages to this recipient (pair rate)
1, 2                        retry       API unknown error / service temporarily down
131026                      permanent   recipient cannot receive (no WhatsApp, old app)
131047                      permanent   outside the 24 h window (needs a template)
131048                      permanent   spam rate limit: the number is being restricted
368                         permanent   temporarily blocked for policy violations
other code, HTTP 429 or 5xx retry
other code, other HTTP 4xx  permanent   (bad token 190, bad parameters 100, ...)
no answer (timeout, reset)  retry
=========================== =========== =============================================

A ``Retry-After`` header (seconds or an HTTP date) is passed on as the error's
``retry_after_s``. A timeout after the request went out is retried, though the provider
may have taken the message: that is the provider-side at-least-once window (see
``docs/notifications.md``).

The token is never logged and never part of this object's ``repr``.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any, Final

import msgspec

from iceshop.notify.http_provider import HttpProvider
from iceshop.notify.provider import Outbound, PermanentSendError, RetryableSendError, Sent

__all__ = [
    "PERMANENT_CODES",
    "RETRYABLE_CODES",
    "WhatsAppProvider",
    "classify",
    "message_body",
    "parse_retry_after",
]

RETRYABLE_CODES: Final = frozenset({1, 2, 130429, 131056})
PERMANENT_CODES: Final = frozenset({368, 131026, 131047, 131048})


class _ErrorData(msgspec.Struct):
    details: str | None = None


class _GraphError(msgspec.Struct):
    code: int | None = None
    message: str | None = None
    error_subcode: int | None = None
    error_data: _ErrorData | None = None


class _ErrorBody(msgspec.Struct):
    error: _GraphError | None = None


class _MessageId(msgspec.Struct):
    id: str | None = None


class _OkBody(msgspec.Struct):
    messages: list[_MessageId] = msgspec.field(default_factory=list)


_ok_decoder: Final = msgspec.json.Decoder(_OkBody)
_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)
_encoder: Final = msgspec.json.Encoder()


def message_body(msg: Outbound) -> dict[str, Any]:
    """The Cloud API request body for ``msg``."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": msg.to.removeprefix("+"),
        "type": "template",
        "template": {
            "name": msg.template,
            "language": {"code": msg.locale},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": p} for p in msg.params],
                }
            ],
        },
        "biz_opaque_callback_data": msg.notification_id,
    }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta seconds or an HTTP date), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify(status: int, body: bytes, retry_after: str | None = None) -> Sent:
    """The answer to one send: :class:`Sent`, or raise the matching send error."""
    if 200 <= status < 300:
        try:
            ids = [m.id for m in _ok_decoder.decode(body).messages if m.id]
        except msgspec.DecodeError:
            ids = []
        return Sent(message_id=ids[0] if ids else None)
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        error = None
    code = error.code if error is not None else None
    reason = f"HTTP {status}"
    if error is not None:
        if error.message:
            reason += f": {error.message}"
        if error.error_data is not None and error.error_data.details:
            reason += f" ({error.error_data.details})"
        if code is not None:
            reason += f" [code {code}]"
    if code in PERMANENT_CODES:
        raise PermanentSendError(reason, code)
    if code in RETRYABLE_CODES or status == 429 or status >= 500:
        raise RetryableSendError(reason, code or status, parse_retry_after(retry_after))
    raise PermanentSendError(reason, code or status)


class WhatsAppProvider(HttpProvider):
    """Sends through the Cloud API from ``phone_number_id``. Use as
    ``async with WhatsAppProvider(...) as provider`` (it owns an HTTP connection pool
    of at most ``max_connections``)."""

    name = "whatsapp"

    def __init__(
        self,
        *,
        token: str,
        phone_number_id: str,
        api_base: str = "https://graph.facebook.com",
        api_version: str = "v21.0",
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        if not token:
            raise ValueError("the WhatsApp provider needs an access token")
        if not phone_number_id:
            raise ValueError("the WhatsApp provider needs a phone number id")
        self.phone_number_id = phone_number_id
        self._token = token
        super().__init__(
            f"{api_base.rstrip('/')}/{api_version.strip('/')}/{phone_number_id}/messages",
            timeout=timeout,
            max_connections=max_connections,
        )

    def __repr__(self) -> str:
        return f"WhatsAppProvider(url={self.url!r})"

    @property
    def sender(self) -> str:
        return self.phone_number_id

    def _client_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def send(self, msg: Outbound) -> Sent:
        response = await self._post(
            _encoder.encode(message_body(msg)), {"Content-Type": "application/json"}
        )
        return classify(response.status_code, response.content, response.headers.get("retry-after"))

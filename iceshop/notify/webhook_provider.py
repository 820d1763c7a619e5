"""The ``webhook`` provider: POST each message as JSON to a URL of the operator's.

For deployments that send through their own gateway (SMS, e-mail, another messaging
service). The body is the message as the notifier built it::

    {"notification_id", "to", "locale", "template", "params", "text"}

with ``Idempotency-Key: <notification_id>``, so a gateway can drop the copy the
at-least-once window may produce. A 2xx answer means taken (an ``{"id": ...}`` answer
is kept as the message id); 429 and 5xx are retryable (honouring ``Retry-After``), any
other status permanent; no answer (timeout, refused, reset) is retryable.
"""

from __future__ import annotations

from typing import Final

import msgspec

from iceshop.notify.http_provider import HttpProvider
from iceshop.notify.provider import Outbound, PermanentSendError, RetryableSendError, Sent
from iceshop.notify.whatsapp import parse_retry_after

__all__ = ["WebhookProvider"]


class _Answer(msgspec.Struct):
    id: str | None = None


_answer_decoder: Final = msgspec.json.Decoder(_Answer)
_encoder: Final = msgspec.json.Encoder()


class WebhookProvider(HttpProvider):
    """POSTs to ``url``. Use as ``async with WebhookProvider(url) as provider``."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0, max_connections: int = 32) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s): {url!r}")
        super().__init__(url, timeout=timeout, max_connections=max_connections)

    @property
    def sender(self) -> str:
        return self.url

    async def send(self, msg: Outbound) -> Sent:
        response = await self._post(
            _encoder.encode(msg),
            {"Content-Type": "application/json", "Idempotency-Key": msg.notification_id},
        )
        status = response.status_code
        if 200 <= status < 300:
            try:
                message_id = _answer_decoder.decode(response.content).id
            except msgspec.DecodeError:
                message_id = None
            return Sent(message_id=message_id)
        reason = f"HTTP {status}: {response.text[:200]}".rstrip(": ")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RetryableSendError(reason, status, retry_after)
        raise PermanentSendError(reason, status)

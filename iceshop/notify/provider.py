"""The one interface every notification provider implements: send one message.

A provider turns an :class:`Outbound` message into a delivery attempt and says how it
went: it returns :class:`Sent` when the provider took the message, or raises one of two
errors, split by what the notifier should do next::

    SendError                 the message was not taken
    ├── RetryableSendError    try again later (rate limits, 5xx, timeouts); may carry
    │                         the provider's own ``retry_after_s``
    └── PermanentSendError    never try again (unknown number, no consent, policy)

Lower-layer errors (httpx, file I/O) never leave a provider unmapped: they are raised
as one of these with ``raise ... from`` so the cause stays on the traceback. Retrying,
rate limiting and bookkeeping are the notifier's business, not the provider's: a
provider makes exactly one attempt per call.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

__all__ = [
    "Outbound",
    "PermanentSendError",
    "Provider",
    "RetryableSendError",
    "SendError",
    "Sent",
]


class Outbound(msgspec.Struct, frozen=True, kw_only=True):
    """One message to send: a template with its parameters, and the same as plain text."""

    notification_id: str
    to: str
    """The recipient's phone number, E.164 (``+905551234567``)."""
    locale: str
    template: str
    params: tuple[str, ...]
    text: str


class Sent(msgspec.Struct, frozen=True, kw_only=True):
    """The provider took the message; ``message_id`` is its id for it, when it has one
    (WhatsApp's ``wamid``, which its status callbacks name)."""

    message_id: str | None = None


class SendError(Exception):
    """The provider did not take the message. ``code`` is the provider's error code
    (WhatsApp's ``error.code``) or else the HTTP status; ``None`` when neither exists."""

    retryable: bool = False

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RetryableSendError(SendError):
    """Worth trying again; not before ``retry_after_s`` when the provider said so."""

    retryable = True

    def __init__(
        self, reason: str, code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason, code)
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    """Trying again would fail the same way."""


class Provider(Protocol):
    """A way to reach buyers. ``name`` is recorded with each notification; ``sender``
    is the sending identity the rate limit applies to (a WhatsApp phone number id)."""

    @property
    def name(self) -> str: ...

    @property
    def sender(self) -> str: ...

    async def send(self, msg: Outbound) -> Sent:
        """Make one attempt; raise :class:`RetryableSendError` or
        :class:`PermanentSendError` when the message was not taken."""
        ...

"""The envelope a message travels in, and the overflow policies of a mailbox.

An envelope carries the message, where its reply goes (a callable taking the reply
value or an :class:`~actors.errors.ActorsError`), its headers (trace context and the
like) and an optional deadline (monotonic seconds) after which it is not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

__all__ = ["Envelope", "Overflow", "Reply"]

Reply = Callable[[Any], None]


class Overflow(Enum):
    """What a full mailbox does with one more message.

    * ``REJECT`` — refuse the new message: ``tell`` raises
      :class:`~actors.errors.Overloaded` at once (the retryable answer under a crowd).
    * ``DROP_NEWEST`` — drop the new message, answering its reply with ``Overloaded``.
    * ``DROP_OLDEST`` — drop the oldest queued message (answering it with
      ``Overloaded``) and keep the new one.
    """

    REJECT = "reject"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class Envelope:
    __slots__ = ("attempts", "deadline", "headers", "message", "reply")

    def __init__(
        self,
        message: Any,
        reply: Reply | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.message = message
        self.reply = reply
        self.headers = headers
        self.deadline = deadline
        self.attempts = 0

    def __repr__(self) -> str:
        return f"Envelope({type(self.message).__name__}, attempts={self.attempts})"

"""Event-sourced persistence: the journal interface and its implementations.

:class:`JetStreamJournal` is loaded on first use, so importing the runtime does not
import the NATS client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import DeadLetter, Deadline, Journal, OutboxEntry, Recovery, WriteRequest
from .memory import MemoryJournal
from .sqlite import SqliteJournal

if TYPE_CHECKING:
    from .jetstream import JetStreamJournal

__all__ = [
    "DeadLetter",
    "Deadline",
    "JetStreamJournal",
    "Journal",
    "MemoryJournal",
    "OutboxEntry",
    "Recovery",
    "SqliteJournal",
    "WriteRequest",
]


def __getattr__(name: str) -> Any:
    if name == "JetStreamJournal":
        from .jetstream import JetStreamJournal

        return JetStreamJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

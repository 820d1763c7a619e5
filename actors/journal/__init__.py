"""Event-sourced persistence: the journal interface and its implementations."""

from __future__ import annotations

from .base import DeadLetter, Deadline, Journal, OutboxEntry, Recovery, WriteRequest
from .memory import MemoryJournal
from .sqlite import SqliteJournal

__all__ = [
    "DeadLetter",
    "Deadline",
    "Journal",
    "MemoryJournal",
    "OutboxEntry",
    "Recovery",
    "SqliteJournal",
    "WriteRequest",
]

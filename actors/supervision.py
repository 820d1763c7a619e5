"""Supervision: restart with backoff, and dead letters for poison messages.

A handler that raises does not take the node down. The actor's turn stops, the failed
message (and, for a persistent actor, every message of the uncommitted batch) goes back
to the head of its mailbox, and after a backoff delay a fresh incarnation replaces the
actor — rebuilt from its journal if it is persistent. A message that has failed
``max_failures`` times is not retried again: it is kept as a :class:`DeadLetter`
(in memory and, when the system has a journal, in the journal) and its asker gets
:class:`~actors.errors.ActorFailed`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import msgspec
import structlog

from .journal.base import DeadLetter, Journal

__all__ = ["DeadLetters", "backoff_delay"]

log = structlog.get_logger("actors.supervision")

_encoder = msgspec.msgpack.Encoder()


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """Delay before restart number ``failures`` (1-based): doubles up to ``cap``."""
    if failures <= 1:
        return min(first, cap)
    return min(cap, first * (2.0 ** min(failures - 1, 30)))


def encode_payload(message: Any) -> bytes | None:
    """Best effort: the message as MessagePack, or None when it can't be encoded."""
    try:
        return _encoder.encode(message)
    except (TypeError, ValueError, msgspec.EncodeError):
        return None


class DeadLetters:
    """Keeps dead letters: the last ``keep`` in memory, all of them in the journal."""

    def __init__(self, journal: Journal | None, keep: int = 1000) -> None:
        self._journal = journal
        self._recent: deque[DeadLetter] = deque(maxlen=keep)
        self._unsaved: deque[DeadLetter] = deque(maxlen=keep * 10)
        self._wake = anyio.Event()
        self.count = 0

    def record(self, letter: DeadLetter) -> None:
        self.count += 1
        self._recent.append(letter)
        if self._journal is not None:
            self._unsaved.append(letter)
            self._wake.set()
        log.error(
            "dead letter",
            kind=letter.kind,
            key=letter.key,
            message_type=letter.message_type,
            error=letter.error,
            attempts=letter.attempts,
        )

    def recent(self) -> list[DeadLetter]:
        """Most recent first, from memory."""
        return list(reversed(self._recent))

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent first, from the journal when there is one."""
        if self._journal is None:
            return self.recent()[:limit]
        await self.flush()
        return await self._journal.dead_letters(limit)

    @property
    def busy(self) -> bool:
        return bool(self._unsaved)

    async def flush(self) -> None:
        assert self._journal is not None
        while self._unsaved:
            await self._journal.add_dead_letter(self._unsaved[0])
            self._unsaved.popleft()  # only once it is stored

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush()
            except Exception as exc:  # keep serving; letters stay in memory
                log.warning("dead letter not saved", error=repr(exc))

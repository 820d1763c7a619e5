"""The ``log`` provider: records what would be sent, sends nothing.

The default for development and the demo. Each message becomes one JSON line appended
to a file (``notifications.jsonl`` in the data directory) and stays in memory among the
last ``keep`` messages, so a developer can read what buyers would have received and a
test can assert on it. Appending is done in a worker thread (file I/O blocks), one
line per ``write`` on a file opened for appending, so several notifier processes on one
data directory interleave whole lines.

It never fails a message on purpose; an unwritable file is a retryable error, as a
full disk may be fixed.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio
import msgspec

from iceshop.notify.provider import Outbound, RetryableSendError, Sent

__all__ = ["LOG_FILE", "LogProvider", "LoggedMessage"]

#: The file the log provider appends to, in the data directory.
LOG_FILE: Final = "notifications.jsonl"


class LoggedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the log file."""

    at: float
    notification_id: str
    to: str
    locale: str
    template: str
    params: tuple[str, ...]
    text: str


_encoder: Final = msgspec.json.Encoder()


class LogProvider:
    """Appends each message to ``path`` (``None``: memory only) and keeps the last
    ``keep`` in :attr:`messages`. Use as ``async with LogProvider(path) as provider``."""

    name = "log"

    def __init__(self, path: Path | None, *, keep: int = 1000, sender: str = "log") -> None:
        self.path = path
        self.messages: deque[LoggedMessage] = deque(maxlen=keep)
        self.sent = 0
        self._sender = sender
        self._file: anyio.AsyncFile[bytes] | None = None

    @property
    def sender(self) -> str:
        return self._sender

    async def __aenter__(self) -> Self:
        if self.path is not None:
            await anyio.Path(self.path.parent).mkdir(parents=True, exist_ok=True)
            self._file = await anyio.open_file(self.path, "ab", buffering=0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        file, self._file = self._file, None
        if file is not None:
            with anyio.CancelScope(shield=True):
                await file.aclose()

    async def send(self, msg: Outbound) -> Sent:
        line = LoggedMessage(
            at=time.time(),
            notification_id=msg.notification_id,
            to=msg.to,
            locale=msg.locale,
            template=msg.template,
            params=msg.params,
            text=msg.text,
        )
        if self._file is not None:
            try:
                await self._file.write(_encoder.encode(line) + b"\n")
            except OSError as exc:
                raise RetryableSendError(f"log file {self.path}: {exc}") from exc
        self.messages.append(line)
        self.sent += 1
        return Sent()

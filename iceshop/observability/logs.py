"""Structured logs of a process: JSON lines for machines, readable lines for people, the
running turn's context on every line, and no blocking write in the event loop.

**Format.** One JSON object per line (``timestamp``, ``level``, ``event`` and
the call's fields) when stderr is not a terminal — a container runtime, journald, a log
shipper —, structlog's console renderer when it is. ``--log-format json|console``
overrides the guess.

**Context.** Every line carries what the code that wrote it would otherwise have to pass
along: ``node`` (bound with ``structlog.contextvars`` when a node starts, so every task it
starts inherits it), and — for a line written inside an actor's handler — the actor's
``kind`` and ``key``, the ``message_type`` being handled and the ``trace_id`` of its trace
(:func:`add_turn_context`). The latter are not bound per message, which would cost every
message a context-variable update: the dispatcher keeps what it runs in two attributes of
its system, and the processor reads them only when a line is actually written
(``actors.current``). Fields the call passes itself win.

**No blocking writes.** structlog's ``PrintLogger`` writes and flushes the stream under a
lock on every call: when stderr is a pipe whose reader falls behind, the write blocks, and
with it the event loop and every actor. Here the line is rendered in the caller (CPU
only) and handed to a bounded queue (:class:`LogWriter`); one thread writes the queued
lines, in batches. A full queue drops the line and counts it, and the writer reports how
many it dropped once it catches up: losing log lines under a storm beats stalling the
shop. The thread is started by :func:`configure` and stopped (the queue flushed) by
:func:`shutdown`, which also runs at exit.

**Other libraries.** Records of the standard library's ``logging`` (nats-py, asyncio,
httpx, ...) go the same way: :func:`configure` puts one handler on the root logger that
renders them with the same processors (structlog's ``ProcessorFormatter``: ``level``,
``timestamp``, the turn's context, plus ``logger``, the library's logger name) into the
same queue, so a JSON process writes only JSON lines and no library write blocks the
loop. The root logger's level is the configured one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from actors.current import current_turn
from actors.tracing import trace_id_of

__all__ = [
    "LOG_FORMATS",
    "LogWriter",
    "QueueHandler",
    "QueueLogger",
    "add_turn_context",
    "configure",
    "renderers_for",
    "shutdown",
    "to_file",
]

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: Final = ("auto", "json", "console")

#: Lines the queue holds before it drops new ones.
QUEUE_CAPACITY: Final = 10_000
#: How long :func:`shutdown` waits for the writer to empty the queue.
SHUTDOWN_TIMEOUT_S: Final = 2.0

_STOP: Final = object()


def add_turn_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``node``, ``kind``, ``key``, ``message_type`` and ``trace_id`` of the actor
    turn this line is written in (nothing outside a turn; the call's own fields win)."""
    turn = current_turn()
    if turn is None:
        return event_dict
    event_dict.setdefault("node", turn.node)
    event_dict.setdefault("kind", turn.kind)
    event_dict.setdefault("key", turn.key)
    if turn.message_type is not None:
        event_dict.setdefault("message_type", turn.message_type)
    trace_id = trace_id_of(turn.traceparent)
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


class LogWriter:
    """A bounded queue of rendered lines and the one thread that writes them."""

    def __init__(self, stream: TextIO, capacity: int = QUEUE_CAPACITY) -> None:
        self.stream = stream
        self.capacity = capacity
        #: Lines dropped because the queue was full.
        self.dropped = 0
        self._reported = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def write(self, line: str) -> None:
        """Queue ``line``; never blocks (a full queue drops it)."""
        if self._closed or self._queue.qsize() >= self.capacity:
            self.dropped += 1
            return
        self._queue.put(line)

    def close(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Write what is queued, then stop the thread (waits up to ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        q = self._queue
        stream = self.stream
        while True:
            item = q.get()
            lines: list[str] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                else:
                    assert isinstance(item, str)
                    lines.append(item)
                if len(lines) >= 512:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            dropped = self.dropped
            if dropped != self._reported:
                lines.append(f"{dropped - self._reported} log lines dropped (the queue was full)")
                self._reported = dropped
            if lines:
                try:
                    stream.write("\n".join(lines) + "\n")
                    stream.flush()
                except (OSError, ValueError):
                    pass  # stderr closed: nowhere to say so
            if stop:
                return


class QueueLogger:
    """The structlog logger of :class:`LogWriter`: every level queues the rendered line."""

    __slots__ = ("_writer",)

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_writer: LogWriter | None = None


def renderers_for(fmt: LogFormat, stream: TextIO) -> list[Processor]:
    """The last processors: ``console`` renders for people (with its own exception
    formatting), ``json`` one object per line; ``auto`` picks console on a terminal."""
    if fmt == "auto":
        try:
            fmt = "console" if stream.isatty() else "json"
        except (AttributeError, ValueError):
            fmt = "json"
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer()]
    return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]


class QueueHandler(logging.Handler):
    """The root logger's handler: a standard-library record, rendered by structlog's
    processors (in the caller: CPU only), queued on :class:`LogWriter`."""

    def __init__(self, writer: LogWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record))
        except Exception:  # a record that cannot be rendered
            self.writer.dropped += 1


_handler: QueueHandler | None = None
#: The root logger's level before :func:`configure` set it (given back by shutdown).
_root_level: int | None = None


def configure(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> LogWriter:
    """Configure structlog and the standard library's ``logging`` for this process (see
    the module docstring): ``level`` is a level name, ``fmt`` one of
    :data:`LOG_FORMATS`, ``stream`` stderr by default. Calling it again replaces the
    previous configuration and its writer."""
    global _writer, _handler, _root_level
    out = stream if stream is not None else sys.stderr
    writer = LogWriter(out)
    writer.start()
    previous, _writer = _writer, writer
    if previous is not None:
        previous.close()
    else:
        atexit.register(shutdown)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    else:
        _root_level = root.level
    _handler = _install(writer, level, fmt, out)
    return writer


def _install(writer: LogWriter, level: str, fmt: LogFormat, out: TextIO) -> QueueHandler:
    """Point structlog and the root logger at ``writer``; returns the root's handler."""
    levelno = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_turn_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderers = renderers_for(fmt, out)
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        context_class=dict,
        logger_factory=lambda *args: QueueLogger(writer),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    )
    handler = QueueHandler(writer, formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(levelno)
    for chatty in ("httpx", "httpcore"):  # a line per request (80/s): warnings only
        logging.getLogger(chatty).setLevel(max(levelno, logging.WARNING))
    return handler


def shutdown() -> None:
    """Write the queued lines and stop the writer thread (also run at exit); records of
    the standard library's ``logging`` are no longer routed here."""
    global _writer, _handler, _root_level
    writer, _writer = _writer, None
    handler, _handler = _handler, None
    if handler is not None:
        root = logging.getLogger()
        root.removeHandler(handler)
        if _root_level is not None:
            root.setLevel(_root_level)
            _root_level = None
    if writer is not None:
        writer.close()


@contextlib.contextmanager
def to_file(path: Path, level: str = "info", fmt: LogFormat = "json") -> Iterator[LogWriter]:
    """Log to the file ``path`` (appending) while the block runs, through a non-blocking
    writer of its own as :func:`configure` does; afterwards the previous configuration
    (structlog's, the root logger's handler and level) comes back. The demo keeps the
    node's log off its screen this way."""
    before = structlog.get_config()
    root = logging.getLogger()
    level_before = root.level
    previous = _handler
    with path.open("a", encoding="utf-8") as f:
        writer = LogWriter(f)
        writer.start()
        if previous is not None:
            root.removeHandler(previous)
        handler = _install(writer, level, fmt, f)
        try:
            yield writer
        finally:
            root.removeHandler(handler)
            writer.close()
            structlog.configure(**before)
            root.setLevel(level_before)
            if previous is not None:
                root.addHandler(previous)

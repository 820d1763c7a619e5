"""Keeping a durable JetStream pull consumer alive: bind, consume, and bind again.

A long-running consumer (a projection, a worker pool) has the same outer life whatever
it does with the messages: wait while its stream does not exist yet, bind to its durable
consumer, consume until the subscription fails, unsubscribe, and try again with
exponential backoff, answering ``task_status.started()`` the first time it is bound.
:func:`run_pull_consumer` is that loop; the caller brings how to bind and how to
consume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats.errors
import structlog
from anyio.abc import TaskStatus

from ..errors import TransportError

__all__ = ["run_pull_consumer", "unsubscribe_quietly"]

log = structlog.get_logger("actors.nats.pull")


async def run_pull_consumer(
    subscribe: Callable[[], Awaitable[Any | None]],
    consume: Callable[[Any], Awaitable[None]],
    *,
    what: str,
    stream: str,
    retry_initial: float,
    retry_max: float,
    retry_on: tuple[type[Exception], ...] = (TransportError,),
    on_ready: Callable[[], None] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind with ``subscribe()`` (``None`` while the stream is missing) and run
    ``consume(psub)`` until cancelled, rebinding after a failure in ``retry_on``.
    ``what`` names the consumer in the logs; ``on_ready`` runs once, when first bound."""
    delay = retry_initial
    started = False
    waiting_logged = False
    while True:
        try:
            psub = await subscribe()
            if psub is None:
                if not waiting_logged:
                    log.info(f"{what} waits for its stream", stream=stream)
                    waiting_logged = True
            else:
                delay = retry_initial
                waiting_logged = False
                if not started:
                    started = True
                    if on_ready is not None:
                        on_ready()
                    task_status.started()
                try:
                    await consume(psub)
                finally:
                    await unsubscribe_quietly(psub, what)
        except retry_on as exc:
            log.warning(f"{what} failed; retrying", error=repr(exc), retry_in=delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, retry_max)


async def unsubscribe_quietly(psub: Any, what: str) -> None:
    """Unsubscribe, shielded from cancellation; a connection already gone is fine."""
    with anyio.CancelScope(shield=True):
        try:
            await psub.unsubscribe()
        except (nats.errors.Error, OSError, ValueError) as exc:
            log.debug(f"{what} unsubscribe failed", error=repr(exc))

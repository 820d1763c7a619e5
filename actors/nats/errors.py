"""Translate nats-py exceptions into the runtime's own tree (:mod:`actors.errors`).

nats-py's errors never leave :mod:`actors.nats`: every call into the client runs inside
:func:`mapped_errors`, which re-raises with ``raise ... from`` so the cause stays on the
traceback while callers only ever catch :class:`~actors.errors.TransportError` and its
children::

    nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError -> NoResponders
    nats.errors.TimeoutError (and asyncio timeouts inside the client)  -> RequestTimeout
    nats.errors.ConnectionClosedError, ConnectionDrainingError         -> ConnectionClosed
    any other nats.errors.Error, OSError                               -> TransportError

Errors that already belong to the runtime (:class:`~actors.errors.ActorsError`) pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from ..errors import ActorsError, ConnectionClosed, NoResponders, RequestTimeout, TransportError

__all__ = ["map_error", "mapped_errors"]


def map_error(exc: BaseException, what: str = "") -> ActorsError | None:
    """The runtime error for a lower-layer exception, or ``None`` when it is not one we map
    (cancellation, programming errors, ...). ``what`` names the operation for the message."""
    if isinstance(exc, ActorsError):
        return exc
    prefix = f"{what}: " if what else ""
    detail = (str(exc) or type(exc).__name__).removeprefix("nats: ")
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return NoResponders(f"{prefix}{detail}")
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return RequestTimeout(f"{prefix}{detail}")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return ConnectionClosed(f"{prefix}{detail}")
    if isinstance(exc, nats.errors.Error | OSError):
        return TransportError(f"{prefix}{detail}")
    return None


@contextmanager
def mapped_errors(what: str = "") -> Iterator[None]:
    """Run a block of nats-py calls; re-raise their errors as :mod:`actors.errors`."""
    try:
        yield
    except ActorsError:
        raise
    except Exception as exc:
        mapped = map_error(exc, what)
        if mapped is None:
            raise
        raise mapped from exc

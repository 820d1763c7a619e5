"""Translate nats-py exceptions into the runtime's own tree (:mod:`actors.errors`).

nats-py's errors never leave :mod:`actors.nats`: every call into the client runs inside
:func:`mapped_errors`, which re-raises with ``raise ... from`` so the cause stays on the
traceback while callers only ever catch :class:`~actors.errors.TransportError` and its
children::

    nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError -> NoResponders
    nats.errors.TimeoutError (and asyncio timeouts inside the client)  -> RequestTimeout
    nats.errors.ConnectionClosedError, ConnectionDrainingError         -> ConnectionClosed
    an "Authorization Violation" (login), a "Permissions Violation"    -> NotPermitted
    any other nats.errors.Error, OSError                               -> TransportError

Errors that already belong to the runtime (:class:`~actors.errors.ActorsError`) pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from ..errors import (
    ActorsError,
    ConnectionClosed,
    NoResponders,
    NotPermitted,
    RequestTimeout,
    TransportError,
)

__all__ = [
    "is_login_refused",
    "is_permission_violation",
    "is_wrong_last",
    "map_error",
    "mapped_errors",
]

#: What the server's -ERR says when a publish or subscribe is outside the user's rights
#: (nats-py passes it on in lower case).
PERMISSIONS_VIOLATION = "permissions violation"
#: ... and when it refuses the login (a wrong or missing user, password or token).
AUTHORIZATION_VIOLATION = "authorization violation"


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
    if is_login_refused(exc) or is_permission_violation(exc):
        return NotPermitted(f"{prefix}{detail}")
    if isinstance(exc, nats.errors.Error | OSError):
        return TransportError(f"{prefix}{detail}")
    return None


def is_login_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing the login (nats-py raises a plain error for
    it on the first connect and ``AuthorizationError`` later)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and AUTHORIZATION_VIOLATION in str(exc).lower()
    )


def is_permission_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a publish or subscribe (nats-py reports it
    as a plain error to the error callback and keeps the connection)."""
    return isinstance(exc, nats.errors.Error) and PERMISSIONS_VIOLATION in str(exc).lower()


#: JetStream's "wrong last sequence": a compare-and-set (a KV update or delete naming
#: the revision it expects) found the key moved on.
_WRONG_LAST = frozenset({10071, 10164})


def is_wrong_last(exc: BaseException) -> bool:
    """Whether ``exc`` is a refused compare-and-set on a key (someone wrote it first)."""
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code in _WRONG_LAST
    )


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

"""The runtime's own exception tree.

Lower layers (nats-py, sqlite3/aiosqlite) never leak: they are caught at the edge
and re-raised as one of these with ``raise ... from``.

::

    ActorsError
    ├── ActorStopped          the actor is stopped (or stopping); queued asks fail with it
    ├── AskTimeout            an ask's deadline passed before the reply (also TimeoutError)
    ├── Overloaded            bounded mailbox full under the ``REJECT`` policy (retryable)
    ├── DeadlineExceeded      a message's own deadline passed before its turn (retryable)
    ├── ActorFailed           the handler kept failing; the message went to dead letters
    │                         (retryable: a later attempt may find the actor healthy)
    ├── CommitFailed          the turn's commit failed; state was rolled back (retryable)
    ├── CodecError            a message for another node could not be encoded or decoded
    ├── NotLocal              the actor's shard is held by another node (retryable)
    ├── JournalError
    │   ├── SequenceConflict  another writer appended to the same actor first
    │   └── JournalUnavailable  the store could not be reached or written (retryable)
    └── TransportError        the messaging layer failed (retryable)
        ├── NoResponders      nobody subscribes to the subject
        ├── RequestTimeout    no reply within the deadline
        ├── ConnectionClosed  the connection is closed or draining
        └── NotPermitted      the server refused the login, or a publish or subscribe
                              this user has no permission for (not retryable)

``retryable`` says whether repeating the same request (with the same idempotency key)
may succeed.
"""

from __future__ import annotations

__all__ = [
    "ActorFailed",
    "ActorStopped",
    "ActorsError",
    "AskTimeout",
    "CodecError",
    "CommitFailed",
    "ConnectionClosed",
    "DeadlineExceeded",
    "JournalError",
    "JournalUnavailable",
    "NoResponders",
    "NotLocal",
    "NotPermitted",
    "Overloaded",
    "RequestTimeout",
    "SequenceConflict",
    "TransportError",
]


class ActorsError(Exception):
    """Base of every error the runtime raises."""

    retryable: bool = False


class ActorStopped(ActorsError):
    """The target actor is stopped; the message was not and will not be handled."""


class AskTimeout(ActorsError, TimeoutError):
    """No reply arrived before the ask's deadline."""

    retryable = True


class Overloaded(ActorsError):
    """The actor's mailbox is full; nothing was enqueued. Retry later."""

    retryable = True


class DeadlineExceeded(ActorsError):
    """The message's deadline passed before its turn came; it was not applied."""

    retryable = True


class ActorFailed(ActorsError):
    """The handler failed on this message too often; it is kept as a dead letter."""

    retryable = True


class CommitFailed(ActorsError):
    """The turn was applied in memory but its commit failed; nothing was kept."""

    retryable = True


class JournalError(ActorsError):
    """Base of persistence errors."""


class SequenceConflict(JournalError):
    """Another writer appended to this actor's journal first (optimistic concurrency)."""

    def __init__(self, kind: str, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{kind}/{key}: expected sequence {expected}, found {actual}")
        self.kind = kind
        self.key = key
        self.expected = expected
        self.actual = actual


class JournalUnavailable(JournalError):
    """The store failed; the write did not happen (or is unknown and will be recovered)."""

    retryable = True


class TransportError(ActorsError):
    """Base of messaging-layer errors."""

    retryable = True


class NoResponders(TransportError):
    """Nobody is subscribed to the request subject."""


class RequestTimeout(TransportError, TimeoutError):
    """The request got no reply within its deadline."""


class ConnectionClosed(TransportError):
    """The connection to the messaging layer is closed or draining."""


class NotPermitted(TransportError):
    """The messaging server refused this client: a wrong or missing login, or a publish
    or subscribe outside the user's permissions. Repeating it changes nothing."""

    retryable = False


class CodecError(ActorsError):
    """A message or reply could not be encoded or decoded for another node (an
    unregistered type, or bytes that do not match the type their tag names)."""


class NotLocal(ActorsError):
    """The actor's shard is not owned here; the sender should locate it again."""

    retryable = True

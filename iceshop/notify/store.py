"""Notification state, in a JetStream key-value bucket shared by every notifier.

Why a key-value bucket and not SQLite: notifiers scale out as several processes pulling
from one durable consumer, on one node or on a cluster. The state that keeps them from
sending twice must be shared by all of them, and JetStream already is; a bucket needs no
second store to deploy, back up or fail over. Every write is a compare-and-set on the
key's last revision, so two writers never overwrite each other: the loser re-reads and
merges.

Keys::

    n.<notification_id>    NotificationRecord  the notification's lifecycle
    m.<hash of message id> MessageLink         provider message id -> notification id

**States.** ``claimed`` (a notifier is sending it now), ``retrying`` (the last attempt
failed and may be repeated; the claim is released), ``sent`` (the provider accepted it),
``delivered``, ``read`` (the provider's status callbacks), ``failed`` (permanent error,
or no opt-in) and ``dead`` (retries exhausted). ``sent < delivered < read``; ``failed``
and ``dead`` are terminal. The state only moves up that order, whoever writes and in
whatever order the writes come, so a status callback that arrives twice, late, or
before the notifier's own ``sent`` write (the provider can be faster than our store)
changes nothing it should not.

``outcome`` is separate from ``state``: it is the notifier's own verdict (``sent``,
``failed`` or ``dead``), the one the contract event announces. A later ``failed``
status from the provider changes ``state``, never ``outcome``; the notifier announces it
with an event of its own and then sets ``failure_announced``
(:mod:`iceshop.notify.events`).

**Claims.** Before sending, a notifier claims the notification (:meth:`claim`): it
creates the record, or updates it at the revision it read, setting ``claimed_by`` and
``claimed_at`` and counting the claim in ``claims`` (a fencing number: the n-th claim).
Another notifier that finds a fresh claim (younger than the claim TTL) gets
:class:`Busy` and backs off. A claim older than the TTL belongs to a notifier that
crashed or hung: if the provider's message id is known the notification was sent (the
record is then ``sent`` or beyond and :meth:`claim` answers :class:`Settled`); if not it
is *in doubt* and may be taken over, which is recorded as an ``in_doubt`` attempt.

The at-least-once window that remains: a notifier the provider accepted a message from,
that dies before its ``sent`` write lands, leaves an expired claim without a message id,
and the message is sent again after the claim TTL. Nothing short of an idempotency key
on the provider's side closes it; the window is one HTTP response plus one store write
wide.

**Status before link.** A provider status names the message id and, when the provider
echoes it, our notification id (WhatsApp's ``biz_opaque_callback_data``). Without the
notification id the status is looked up through the message link; if the link does not
exist yet (the status overtook our ``sent`` write), the status is parked in the link and
applied by the notifier when it writes the link.

Lower-layer errors (nats-py) leave this module as :class:`~actors.errors.TransportError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final, Literal

import msgspec
import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from actors.errors import TransportError
from actors.nats import NatsTransport, mapped_errors

__all__ = [
    "BUCKET",
    "Attempt",
    "Busy",
    "ClaimResult",
    "Claimed",
    "MessageLink",
    "NotificationRecord",
    "NotificationStore",
    "Settled",
    "State",
    "StatusUpdate",
    "is_final",
]

log = structlog.get_logger("iceshop.notify.store")

#: The bucket's name (its stream is ``KV_ICESHOP_NOTIFY``).
BUCKET: Final = "ICESHOP_NOTIFY"

State = Literal["claimed", "retrying", "sent", "delivered", "read", "failed", "dead"]
Outcome = Literal["sent", "failed", "dead"]
AttemptOutcome = Literal["sent", "retry", "failed", "dead", "in_doubt"]
StatusName = Literal["sent", "delivered", "read", "failed"]

_RANK: Final[dict[str, int]] = {
    "claimed": 0,
    "retrying": 0,
    "sent": 1,
    "delivered": 2,
    "read": 3,
    "failed": 4,
    "dead": 4,
}
#: Statuses parked in a link before the notification is known: a few are plenty (one per
#: status name); more would only be duplicates.
_MAX_PARKED: Final = 8
_CAS_ROUNDS: Final = 32


class StatusUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's report on one message (from the status webhook)."""

    message_id: str
    notification_id: str | None = None
    status: StatusName
    at: float
    """Epoch seconds, as the provider stamped it."""
    recipient: str
    error_code: int | None = None
    error_title: str | None = None


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try (or a possible one: ``in_doubt``) at sending, as stored."""

    at: float
    outcome: AttemptOutcome
    code: int | None = None
    reason: str = ""
    by: str = ""


class NotificationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The value under ``n.<notification_id>``."""

    notification_id: str
    state: State
    outcome: Outcome | None = None
    """The notifier's verdict, announced as the contract event; ``None`` until made."""
    attempts: tuple[Attempt, ...] = ()
    message_id: str | None = None
    claimed_by: str | None = None
    claimed_at: float | None = None
    claims: int = 0
    """How many claims were taken (the current claim's fencing number)."""
    buyer_id: str = ""
    window_id: str = ""
    product_id: str = ""
    provider: str = ""
    error_code: int | None = None
    reason: str = ""
    decided_at: float | None = None
    """When ``outcome`` was decided (the event's ``at``)."""
    status_at: float | None = None
    """When the provider's latest status was stamped."""
    failure_announced: bool = False
    """A ``failed`` status that came after the ``sent`` verdict has been announced (its
    own event, ``seq`` 3); set after the publish, so the announcement is at least once."""

    @property
    def settled(self) -> bool:
        """Nothing is left to send: the provider has it, or it failed for good."""
        return self.outcome is not None or _RANK[self.state] >= 1 or self.message_id is not None


class MessageLink(msgspec.Struct, frozen=True, kw_only=True):
    """The value under ``m.<hash>``: which notification a provider message belongs to."""

    message_id: str
    notification_id: str | None = None
    parked: tuple[StatusUpdate, ...] = ()


class Claimed(msgspec.Struct, frozen=True):
    """The caller holds the claim; send, then :meth:`NotificationStore.settle`."""

    record: NotificationRecord
    revision: int


class Busy(msgspec.Struct, frozen=True):
    """Another notifier holds a fresh claim; try again in ``retry_in`` seconds."""

    record: NotificationRecord
    retry_in: float


class Settled(msgspec.Struct, frozen=True):
    """Already sent, failed or dead: nothing to send (re-announce its outcome)."""

    record: NotificationRecord


ClaimResult = Claimed | Busy | Settled

_record_decoder: Final = msgspec.json.Decoder(NotificationRecord)
_link_decoder: Final = msgspec.json.Decoder(MessageLink)
_encoder: Final = msgspec.json.Encoder()


def is_final(state: str) -> bool:
    """``failed`` and ``dead``: the record never changes state again."""
    return _RANK.get(state, 0) >= 4


def _higher(current: State, new: State) -> State:
    return new if _RANK[new] > _RANK[current] else current


def record_key(notification_id: str) -> str:
    return f"n.{notification_id}"


def link_key(message_id: str) -> str:
    """Message ids may hold characters a key may not (``+``, ``/``...): hash them."""
    return "m." + hashlib.blake2b(message_id.encode(), digest_size=16).hexdigest()


class _Conflict(Exception):
    """Someone wrote the key since we read it."""


class NotificationStore:
    """The notification bucket. ``await store.open()`` before use (creates it if missing).

    ``replicas`` and ``max_age`` apply when this store creates the bucket; records
    older than ``max_age`` seconds leave it (keep it longer than the request stream's
    age, so a redelivered request still finds its record)."""

    def __init__(
        self,
        transport: NatsTransport,
        *,
        bucket: str = BUCKET,
        replicas: int = 1,
        max_age: float | None = None,
        api_timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.bucket = bucket
        self.replicas = replicas
        self.max_age = max_age
        self.api_timeout = api_timeout
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        js = self.transport.jetstream(timeout=self.api_timeout)
        with mapped_errors(f"notification bucket {self.bucket}"):
            try:
                self._kv = await js.key_value(self.bucket)
                return
            except nats.js.errors.BucketNotFoundError:
                pass
            try:
                self._kv = await js.create_key_value(
                    bucket=self.bucket,
                    history=1,
                    ttl=self.max_age,
                    replicas=self.replicas,
                    description="iceshop notification state",
                )
            except nats.js.errors.BadRequestError:
                # Created by another notifier meanwhile (or refused: then this fails too).
                self._kv = await js.key_value(self.bucket)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise TransportError("the notification store is not open")
        return self._kv

    # -- raw access --------------------------------------------------------------------

    async def _read(self, key: str) -> tuple[bytes, int] | None:
        with mapped_errors(f"notification store get {key}"):
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
        assert entry.revision is not None
        return entry.value or b"", entry.revision

    async def _write(self, key: str, value: bytes, revision: int | None) -> int:
        """Create (``revision`` None) or compare-and-set; :class:`_Conflict` on a race."""
        with mapped_errors(f"notification store write {key}"):
            try:
                if revision is None:
                    return int(await self.kv.create(key, value))
                return int(await self.kv.update(key, value, last=revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise _Conflict from None

    async def _mutate_record(
        self,
        notification_id: str,
        change: Callable[[NotificationRecord | None], NotificationRecord | None],
        known: tuple[NotificationRecord, int] | None = None,
    ) -> tuple[NotificationRecord | None, int | None]:
        """Read, ``change``, compare-and-set, until no one raced us. ``change`` returns
        ``None`` for "nothing to write"; the result is then the record as read."""
        key = record_key(notification_id)
        current: NotificationRecord | None
        revision: int | None
        for _ in range(_CAS_ROUNDS):
            if known is not None:
                current, revision = known
                known = None
            else:
                found = await self._read(key)
                current = _record_decoder.decode(found[0]) if found is not None else None
                revision = found[1] if found is not None else None
            new = change(current)
            if new is None:
                return current, revision
            try:
                return new, await self._write(key, _encoder.encode(new), revision)
            except _Conflict:
                continue
        raise TransportError(f"notification {notification_id}: too many concurrent writes")

    # -- reading -----------------------------------------------------------------------

    async def get(self, notification_id: str) -> NotificationRecord | None:
        found = await self._read(record_key(notification_id))
        return _record_decoder.decode(found[0]) if found is not None else None

    async def link(self, message_id: str) -> MessageLink | None:
        found = await self._read(link_key(message_id))
        return _link_decoder.decode(found[0]) if found is not None else None

    async def records(self) -> list[NotificationRecord]:
        """Every record in the bucket (operators and tests; reads the whole bucket)."""
        with mapped_errors(f"notification bucket {self.bucket} keys"):
            try:
                keys = await self.kv.keys()
            except nats.js.errors.NoKeysError:
                return []
        found = [await self._read(key) for key in keys if key.startswith("n.")]
        return [_record_decoder.decode(f[0]) for f in found if f is not None]

    # -- the notifier's side ------------------------------------------------------------

    async def claim(
        self,
        template: NotificationRecord,
        worker: str,
        *,
        now: float,
        ttl: float,
    ) -> ClaimResult:
        """Claim ``template.notification_id`` for ``worker`` at wall time ``now``.

        ``template`` carries the fields a new record starts with (ids, provider)."""
        nid = template.notification_id
        key = record_key(nid)
        known: tuple[NotificationRecord, int] | None = None
        for _ in range(_CAS_ROUNDS):
            if known is None:
                fresh = msgspec.structs.replace(
                    template, state="claimed", claimed_by=worker, claimed_at=now, claims=1
                )
                try:
                    # The common case, a new notification: one write, no read.
                    return Claimed(fresh, await self._write(key, _encoder.encode(fresh), None))
                except _Conflict:
                    pass
                found = await self._read(key)
                if found is None:
                    continue
                known = (_record_decoder.decode(found[0]), found[1])
            record, revision = known
            if record.settled:
                return Settled(record)
            if record.state == "claimed" and record.claimed_at is not None:
                age = now - record.claimed_at
                if 0 <= age < ttl:
                    return Busy(record, ttl - age)
            attempts = record.attempts
            if record.state == "claimed":
                log.warning(
                    "notification claim expired: sending again (in doubt)",
                    notification_id=nid,
                    claimed_by=record.claimed_by,
                    claims=record.claims,
                )
                attempts += (
                    Attempt(
                        at=now,
                        outcome="in_doubt",
                        reason=f"claim {record.claims} of {record.claimed_by} expired",
                        by=worker,
                    ),
                )
            taken = msgspec.structs.replace(
                record,
                state="claimed",
                attempts=attempts,
                claimed_by=worker,
                claimed_at=now,
                claims=record.claims + 1,
                provider=template.provider or record.provider,
            )
            try:
                return Claimed(taken, await self._write(key, _encoder.encode(taken), revision))
            except _Conflict:
                found = await self._read(key)
                known = (_record_decoder.decode(found[0]), found[1]) if found else None
        raise TransportError(f"notification {nid}: too many concurrent claims")

    async def settle(
        self,
        claim: Claimed,
        outcome: Literal["sent", "retry", "failed", "dead"],
        *,
        at: float,
        worker: str,
        code: int | None = None,
        reason: str = "",
        message_id: str | None = None,
    ) -> NotificationRecord:
        """Record the attempt made under ``claim`` and what it led to.

        ``retry`` releases the claim (state ``retrying``) when it is still ours; the
        others decide the outcome. A ``sent`` with a provider message id also links the
        id to the notification and applies statuses that arrived before the link."""
        attempt = Attempt(at=at, outcome=outcome, code=code, reason=reason, by=worker)

        def change(current: NotificationRecord | None) -> NotificationRecord:
            base = current if current is not None else claim.record
            attempts = (*base.attempts, attempt)
            if outcome == "retry":
                ours = base.state == "claimed" and base.claims == claim.record.claims
                return msgspec.structs.replace(
                    base,
                    attempts=attempts,
                    state="retrying" if ours else base.state,
                    claimed_by=None if ours else base.claimed_by,
                    claimed_at=None if ours else base.claimed_at,
                    error_code=code,
                    reason=reason,
                )
            state: State = "sent" if outcome == "sent" else outcome
            if base.outcome is not None and base.outcome != outcome:
                log.warning(
                    "notification decided twice",
                    notification_id=base.notification_id,
                    first=base.outcome,
                    now=outcome,
                )
            return msgspec.structs.replace(
                base,
                attempts=attempts,
                state=base.state if is_final(base.state) else _higher(base.state, state),
                outcome=base.outcome or outcome,
                message_id=base.message_id or message_id,
                claimed_by=None,
                claimed_at=None,
                error_code=code if outcome != "sent" else base.error_code,
                reason=reason if outcome != "sent" else base.reason,
                decided_at=base.decided_at if base.outcome is not None else at,
            )

        record, _ = await self._mutate_record(
            claim.record.notification_id, change, (claim.record, claim.revision)
        )
        assert record is not None
        if outcome == "sent" and message_id is not None:
            record = await self._link(record.notification_id, message_id) or record
        return record

    async def release(self, notification_id: str, worker: str) -> None:
        """Give ``worker``'s claim up without an attempt (nothing was sent): the
        notification is ``retrying`` and any notifier may claim it at once. Someone
        else's claim, or a record past ``claimed``, is left alone."""

        def change(current: NotificationRecord | None) -> NotificationRecord | None:
            if current is None or current.state != "claimed" or current.claimed_by != worker:
                return None
            return msgspec.structs.replace(
                current, state="retrying", claimed_by=None, claimed_at=None
            )

        await self._mutate_record(notification_id, change)

    async def refuse(
        self, template: NotificationRecord, *, at: float, reason: str
    ) -> NotificationRecord:
        """Decide ``failed`` without sending (no opt-in); keeps an earlier verdict."""

        def change(current: NotificationRecord | None) -> NotificationRecord | None:
            base = current if current is not None else template
            if base.settled:
                return None
            return msgspec.structs.replace(
                base,
                state="failed",
                outcome="failed",
                reason=reason,
                decided_at=at,
                claimed_by=None,
                claimed_at=None,
            )

        record, _ = await self._mutate_record(template.notification_id, change)
        assert record is not None
        return record

    async def _link(self, notification_id: str, message_id: str) -> NotificationRecord | None:
        """Write the message link; apply statuses parked in it. The record as it ends."""
        key = link_key(message_id)
        record: NotificationRecord | None = None
        for _ in range(_CAS_ROUNDS):
            found = await self._read(key)
            current = _link_decoder.decode(found[0]) if found is not None else None
            if current is not None and current.notification_id not in (None, notification_id):
                log.warning(
                    "provider message id already linked to another notification",
                    message_id=message_id,
                    notification_id=notification_id,
                    linked=current.notification_id,
                )
                return None
            for update in current.parked if current is not None else ():
                record = await self._apply(notification_id, update)
            if current is not None and current.notification_id and not current.parked:
                return record  # linked already, nothing parked: nothing to write
            linked = MessageLink(message_id=message_id, notification_id=notification_id)
            try:
                await self._write(key, _encoder.encode(linked), found[1] if found else None)
                return record
            except _Conflict:
                continue
        raise TransportError(f"message link {message_id}: too many concurrent writes")

    async def mark_failure_announced(self, notification_id: str) -> None:
        """Note that the late ``failed`` of ``notification_id`` has been announced."""

        def change(current: NotificationRecord | None) -> NotificationRecord | None:
            if current is None or current.failure_announced:
                return None
            return msgspec.structs.replace(current, failure_announced=True)

        await self._mutate_record(notification_id, change)

    # -- the provider's side ------------------------------------------------------------

    async def apply_status(self, update: StatusUpdate) -> NotificationRecord | None:
        """Merge a provider status. Idempotent and order-free (see the module docstring).

        Returns the record as it is afterwards, or ``None`` when the status names no
        notification and its message is not linked yet (it is parked until it is)."""
        nid = update.notification_id
        if nid is None:
            nid = await self._resolve(update)
            if nid is None:
                return None
        return await self._apply(nid, update)

    async def _apply(self, notification_id: str, update: StatusUpdate) -> NotificationRecord:
        def change(current: NotificationRecord | None) -> NotificationRecord | None:
            if current is None:
                return NotificationRecord(
                    notification_id=notification_id,
                    state=update.status,
                    message_id=update.message_id,
                    error_code=update.error_code if update.status == "failed" else None,
                    reason=_status_reason(update),
                    status_at=update.at,
                )
            state = (
                current.state if is_final(current.state) else _higher(current.state, update.status)
            )
            message_id = current.message_id or update.message_id
            if current.message_id not in (None, update.message_id):
                log.warning(
                    "status for a second provider message of one notification",
                    notification_id=notification_id,
                    message_id=update.message_id,
                    first=current.message_id,
                )
            if state == current.state and message_id == current.message_id:
                return None  # a duplicate, or a late status the state already passed
            failed_now = state == "failed" and current.state != "failed"
            return msgspec.structs.replace(
                current,
                state=state,
                message_id=message_id,
                error_code=update.error_code if failed_now else current.error_code,
                reason=_status_reason(update) if failed_now else current.reason,
                status_at=max(update.at, current.status_at or 0.0),
            )

        record, _ = await self._mutate_record(notification_id, change)
        assert record is not None
        return record

    async def _resolve(self, update: StatusUpdate) -> str | None:
        """The linked notification id, or park ``update`` in the link and return None."""
        key = link_key(update.message_id)
        for _ in range(_CAS_ROUNDS):
            found = await self._read(key)
            current = _link_decoder.decode(found[0]) if found is not None else None
            if current is not None and current.notification_id is not None:
                return current.notification_id
            parked = current.parked if current is not None else ()
            if update in parked:
                return None
            link = MessageLink(
                message_id=update.message_id, parked=(*parked, update)[-_MAX_PARKED:]
            )
            try:
                await self._write(key, _encoder.encode(link), found[1] if found else None)
                return None
            except _Conflict:
                continue
        raise TransportError(f"message link {update.message_id}: too many concurrent writes")


def _status_reason(update: StatusUpdate) -> str:
    if update.status != "failed":
        return ""
    return update.error_title or "failed (provider status)"

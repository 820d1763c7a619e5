"""The send lease: one notifier at a time sends from a sending number.

WhatsApp's limit (80 messages a second by default) is per sending number, whoever
sends; so is the per-recipient spacing. Every notifier (in each node, and each
``iceshop notifier`` process) therefore competes for one lease per sending number, a key
``lease.<hash of the sender>`` in the notifier's key-value bucket (``ICESHOP_NOTIFY``).
Only the holder pulls requests and sends; the others stand by and take over when the
lease lapses or is released. Then the rate limiter of a single process paces every send
from the number, and its limit holds across processes. Claims (:mod:`iceshop.notify.store`)
still keep a notification from being sent twice across a takeover.

The rules are the shard leases' (:mod:`actors.cluster.leases`), for one key:

*Renewal.* The holder rewrites the key every ``heartbeat`` seconds with a
compare-and-set on the revision it holds. A refused write means somebody took it.

*Validity, on the holder's monotonic clock.* The lease is valid for the holder until
``t_sent + ttl - margin``, ``t_sent`` being when its last successful write was *sent*.
Before each send the holder checks that at least ``heartbeat`` of it is left
(:meth:`SendLease.remaining`), else it hands the request back unsent; when the lease
ends (:meth:`SendLease.hold` returns) it cuts off every send still waiting for the
provider's answer (see :mod:`iceshop.notify.worker`). So no send of a holder is started
or awaited past its validity, which ends ``margin`` before any standby may take over;
an event loop stalled longer than ``margin`` is the one way to overlap.

*Lapse, on a standby's monotonic clock.* A standby reads the key every ``poll`` seconds and
judges the lease lapsed only when its revision has stayed the same for ``ttl`` seconds
counted from when it first saw that revision (after the holder sent it), so the holder's
validity always ends first, ``margin`` before, with no clock synchronisation. It then
takes the lease with a compare-and-set on that revision: one taker wins.

*Release.* A notifier that stops (after its sends in flight are recorded) deletes the key
at its revision, and a standby takes over at its next read, without waiting for a lapse.
The new holder's first send waits one rate interval (:meth:`RateLimiter.hold_off
<iceshop.notify.ratelimit.RateLimiter.hold_off>`), so the sends of the two holders are as
far apart as those of one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Final

import anyio
import msgspec
import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from actors.clock import Clock
from actors.errors import TransportError
from actors.nats import mapped_errors
from actors.nats.errors import is_wrong_last

__all__ = ["LeaseRecord", "SendLease", "lease_key"]

log = structlog.get_logger("iceshop.notify.lease")


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The value under ``lease.<hash>`` (informational: the revision is what counts)."""

    owner: str
    sender: str
    renewed_at: float
    """The holder's wall clock when it wrote this (for operators, never compared)."""


def lease_key(sender: str) -> str:
    """Sender identities may hold characters a key may not: hash them."""
    return "lease." + hashlib.blake2b(sender.encode(), digest_size=16).hexdigest()


_encoder: Final = msgspec.json.Encoder()


class SendLease:
    """One notifier's lease on one sending number, in ``kv``.

    :meth:`acquire` waits until this notifier holds it; :meth:`hold` keeps it (renewing)
    and returns when it is lost; :meth:`release` gives it up. :meth:`owns` is the check
    before each send."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        sender: str,
        owner: str,
        clock: Clock,
        ttl: float = 6.0,
        heartbeat: float | None = None,
        margin: float | None = None,
        poll: float | None = None,
        api_timeout: float = 5.0,
    ) -> None:
        heartbeat = ttl / 4 if heartbeat is None else heartbeat
        margin = ttl / 4 if margin is None else margin
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError("ttl must be a positive number of seconds")
        if not 0 <= margin < ttl:
            raise ValueError(f"margin must be in [0, ttl), not {margin} (ttl {ttl})")
        if not 0 < heartbeat < ttl - margin:
            raise ValueError(f"heartbeat must be positive and below ttl - margin, not {heartbeat}")
        self.kv = kv
        self.sender = sender
        self.owner = owner
        self.key = lease_key(sender)
        self.clock = clock
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.margin = margin
        self.poll = min(heartbeat, 1.0) if poll is None else poll
        """How often a standby reads the key (a release is noticed within this)."""
        self.api_timeout = min(api_timeout, ttl - margin)
        self.revision: int | None = None
        """The revision this notifier holds (``None``: not holding)."""
        self.valid_until = -math.inf
        """Monotonic time until which the lease is valid here."""
        self.acquired = 0
        """Times this notifier took the lease."""
        self.lost = 0
        """Times it lost the lease without giving it up."""
        self._wakeup = anyio.Event()

    def owns(self) -> bool:
        """True while this notifier may send (its lease is valid on its own clock)."""
        return self.revision is not None and self.clock.monotonic() < self.valid_until

    def remaining(self) -> float:
        """Seconds of validity left on this notifier's clock (``0``: not holding)."""
        if self.revision is None:
            return 0.0
        return max(0.0, self.valid_until - self.clock.monotonic())

    def _value(self) -> bytes:
        return _encoder.encode(
            LeaseRecord(owner=self.owner, sender=self.sender, renewed_at=self.clock.time())
        )

    async def _read(self) -> tuple[int, bool]:
        """``(revision, present)``: the key's latest revision (``0`` never written) and
        whether it holds a lease (not deleted)."""
        with mapped_errors(f"send lease get {self.key}"):
            try:
                entry = await self.kv.get(self.key)
            except nats.js.errors.KeyNotFoundError as exc:
                # A delete (a release) leaves a marker whose revision the next write
                # must name; a key never written has none.
                marker = getattr(exc, "entry", None)
                return int(getattr(marker, "revision", None) or 0), False
        return int(entry.revision or 0), True

    async def _write(self, last: int) -> int | None:
        """Compare-and-set at ``last`` (``0``: the key must not exist); ``None`` when
        someone else wrote it first."""
        with (
            anyio.fail_after(self.api_timeout),
            mapped_errors(f"send lease write {self.key}"),
        ):
            try:
                return int(await self.kv.update(self.key, self._value(), last=last))
            except nats.js.errors.APIError as exc:
                if is_wrong_last(exc):
                    return None
                raise

    async def _sleep(self, seconds: float) -> None:
        await self.clock.sleep_until(self.clock.monotonic() + seconds, self._wakeup)

    def wake(self) -> None:
        """Make a sleeping :meth:`acquire` / :meth:`hold` re-check (virtual clocks)."""
        wakeup, self._wakeup = self._wakeup, anyio.Event()
        wakeup.set()

    async def acquire(self, on_standby: Callable[[], None] | None = None) -> None:
        """Wait until this notifier holds the lease (KV failures are retried).
        ``on_standby`` is called once, when another notifier's lease is first found
        live (not at each of its renewals)."""
        seen: tuple[int, float] | None = None  # (revision, first seen) of another's lease
        stood_by = False
        while True:
            try:
                revision, present = await self._read()
                now = self.clock.monotonic()
                if present and (seen is None or seen[0] != revision):
                    seen = (revision, now)
                    if on_standby is not None and not stood_by:
                        stood_by = True
                        on_standby()
                if not present or (seen is not None and now - seen[1] >= self.ttl):
                    sent = self.clock.monotonic()
                    won = await self._write(revision)
                    if won is not None:
                        self.revision = won
                        self.valid_until = sent + self.ttl - self.margin
                        self.acquired += 1
                        log.info(
                            "send lease taken",
                            sender=self.sender,
                            owner=self.owner,
                            lapsed=present,
                        )
                        return
                    seen = None
            except (TransportError, TimeoutError) as exc:
                log.warning("send lease: bucket unavailable", error=repr(exc))
            await self._sleep(self.poll)

    async def hold(self) -> None:
        """Renew the lease every ``heartbeat`` until it is lost; returns then (with
        :meth:`owns` false). Cancel it to stop renewing (then :meth:`release`)."""
        # Kept across wake-ups: an early wake re-checks, it does not postpone renewal.
        next_renewal = self.clock.monotonic() + self.heartbeat
        while self.revision is not None:
            now = self.clock.monotonic()
            if now >= self.valid_until:
                break
            if now < next_renewal:
                await self.clock.sleep_until(min(next_renewal, self.valid_until), self._wakeup)
                continue
            sent = now
            next_renewal = sent + self.heartbeat
            try:
                with anyio.move_on_after(max(0.0, self.valid_until - sent)):
                    won = await self._write(self.revision)
                    if won is None:
                        break  # somebody took it
                    if self.clock.monotonic() < self.valid_until:
                        self.revision = won
                        self.valid_until = sent + self.ttl - self.margin
            except (TransportError, TimeoutError) as exc:
                log.warning("send lease: renewal failed", error=repr(exc))
        self.lost += 1
        self.revision = None
        self.valid_until = -math.inf
        log.warning("send lease lost", sender=self.sender, owner=self.owner)

    async def release(self) -> None:
        """Give the lease up at once (best effort: if it fails it lapses instead)."""
        revision, self.revision = self.revision, None
        self.valid_until = -math.inf
        if revision is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.api_timeout):
            try:
                with mapped_errors(f"send lease delete {self.key}"):
                    await self.kv.delete(self.key, last=revision)
                log.info("send lease released", sender=self.sender, owner=self.owner)
            except (TransportError, nats.js.errors.Error) as exc:
                log.debug("releasing the send lease failed", error=repr(exc))

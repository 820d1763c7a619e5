"""``Notifier``: notification requests from JetStream to a provider, each sent once.

::

    ICESHOP_NOTIFICATIONS ──► durable pull consumer "iceshop-notifier" (bound by the
      <prefix>.notifications.*.requested      notifier holding the send lease)
            │ fetch (at most ``concurrency`` held at a time)
            ▼
    claim in the store ──► opt-in ──► rate limit ──► provider.send ──► record ──► event ──► ack
        │ settled: re-announce, ack      retryable: record, NAK with backoff delay
        │ busy: NAK until the claim ends permanent: ``failed`` + event + ack
                                          exhausted: ``dead`` + event + term

(The opt-in check comes first, before the claim: a request that says the buyer has not
opted in is recorded ``failed`` and never claimed.)

One sender at a time: the notifiers (one in each node, and any ``iceshop notifier``
processes) compete for the send lease of their sending number (:mod:`iceshop.notify.lease`);
only the holder binds the consumer and sends, so one rate limiter paces every message
from the number. The others stand by and take over when the holder stops (it releases
the lease) or dies (the lease lapses). The holder starts a send only with at least a
renewal interval of its lease left, and when the lease ends it cuts off the sends still
waiting for the provider's answer (recorded as retries: the provider may have taken
them, as after a timeout), so no send of an old holder outlasts its lease. A stopping
holder keeps renewing until its sends in flight are recorded. Without a lease
(``lease_ttl=None``) every notifier binds the same durable consumer and the server hands
each request to one of them.

A request that is not acknowledged (the notifier died, hung, or NAK'ed it) comes back
after its delay; so a retry is durable, and the backoff survives a restart and a
takeover. ``ack_wait`` equals the claim TTL: a request redelivered while its first
notifier still works finds a fresh claim and waits instead of sending twice.

Exactly once, as far as it goes: the store's compare-and-set claim means two notifiers
never send one notification at the same time, and a ``sent`` record means never again.
What remains at least once is a notifier dying between the provider's answer and its
``sent`` write (see :mod:`iceshop.notify.store`): after the claim TTL the message is
sent again. The ``sent`` write is retried for half the claim TTL to keep that window
to crashes, not hiccups of the store; and a shutdown (cancellation) waits for a send in
flight to be recorded rather than cutting it off there. A request cancelled before its
send gives its claim back and is NAK'ed, so the next notifier need not wait.

Every attempt is logged (structlog, ``notification attempt``) and stored in the record.
Failures of NATS (store, event publish) NAK the request for a retry shortly and never
end :meth:`run`; it returns only by cancellation, from the task group that owns it.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
from collections.abc import Callable
from typing import Final

import anyio
import msgspec
import nats.errors
import nats.js.errors
import structlog
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from actors.clock import Clock, RealClock
from actors.errors import RequestTimeout, TransportError
from actors.nats import NatsTransport, PullBatches, mapped_errors
from actors.nats.pull import run_pull_consumer
from actors.tracing import Span, Tracer
from iceshop.notify.events import late_failure_event, needs_late_failure_event, outcome_event
from iceshop.notify.lease import SendLease
from iceshop.notify.provider import (
    Outbound,
    PermanentSendError,
    Provider,
    RetryableSendError,
    Sent,
)
from iceshop.notify.ratelimit import RateLimiter
from iceshop.notify.request import (
    REQUEST_STREAM,
    NotifyRequest,
    decode_request,
    request_subject_filter,
)
from iceshop.notify.retry import Backoff
from iceshop.notify.store import (
    Busy,
    Claimed,
    NotificationRecord,
    NotificationStore,
    Settled,
    StatusUpdate,
)
from iceshop.notify.templates import DEFAULT_TEMPLATE, render
from iceshop.wire import DEFAULT_PREFIX, EVENT_STREAM

__all__ = ["DEFAULT_DURABLE", "Notifier", "NotifierStats", "worker_id"]

DEFAULT_DURABLE: Final = "iceshop-notifier"
_MSG_ID: Final = "Nats-Msg-Id"
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: How soon a request comes back after a NATS failure (store, event publish).
_TRANSIENT_DELAY: Final = 1.0

log = structlog.get_logger("iceshop.notify")


def worker_id() -> str:
    """This process's claim owner name: host, pid and a random tag (pids are reused)."""
    raw = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64]


class NotifierStats(msgspec.Struct, kw_only=True):
    """Counters since start (redeliveries included in ``received``)."""

    received: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    settled: int = 0
    """Requests found already done (duplicates, redeliveries after a crash)."""
    busy: int = 0
    """Requests found claimed by another notifier, handed back for later."""
    refused: int = 0
    """Requests refused for lack of consent."""
    errors: int = 0
    """Requests handed back after a NATS failure."""


class Notifier:
    """Consumes notification requests until cancelled; see the module docstring.

    ``provider`` must be open (entered) for as long as :meth:`run` runs."""

    def __init__(
        self,
        transport: NatsTransport,
        store: NotificationStore,
        provider: Provider,
        *,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        backoff: Backoff | None = None,
        prefix: str = DEFAULT_PREFIX,
        stream: str = REQUEST_STREAM,
        event_stream: str = EVENT_STREAM,
        durable: str = DEFAULT_DURABLE,
        template: str = DEFAULT_TEMPLATE,
        claim_ttl: float = 60.0,
        concurrency: int = 32,
        max_ack_pending: int = 20_000,
        fetch_timeout: float = 1.0,
        api_timeout: float = 5.0,
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        worker: str | None = None,
        lease_ttl: float | None = 6.0,
        tracer: Tracer | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not (claim_ttl > 0 and math.isfinite(claim_ttl)):
            raise ValueError("claim_ttl must be a positive number of seconds")
        self.transport = transport
        self.store = store
        self.provider = provider
        self.clock: Clock = clock if clock is not None else RealClock()
        self.limiter = limiter if limiter is not None else RateLimiter(self.clock)
        self.backoff = backoff if backoff is not None else Backoff()
        self.prefix = prefix
        self.stream = stream
        self.event_stream = event_stream
        self.durable = durable
        self.subject = request_subject_filter(prefix)
        self.template = template
        self.claim_ttl = claim_ttl
        self.concurrency = concurrency
        self.max_ack_pending = max_ack_pending
        self.fetch_timeout = fetch_timeout
        self.api_timeout = api_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.worker = worker or worker_id()
        self.lease_ttl = lease_ttl
        """Seconds of the send lease (``None``: none; this notifier sends regardless)."""
        self.lease: SendLease | None = None
        self.tracer = tracer
        """Starts a span per request handled (``None``: no tracing)."""
        self.stats = NotifierStats()
        self._slots = anyio.Semaphore(concurrency)
        self._sending: set[str] = set()
        """Notifications this process is sending now (between send and verdict)."""
        self._cut_offs: set[anyio.CancelScope] = set()
        """One scope per provider call awaiting its answer, cancelled if the lease ends."""
        self._progress: anyio.Event | None = None

    # -- running ------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Notify until cancelled. With ``task_group.start`` it returns once the consumer
        is bound (after the request stream exists), or once this notifier stands by
        because another one holds the send lease.

        With a send lease (``lease_ttl``), the notifier first takes its sending number's
        lease (:mod:`iceshop.notify.lease`) and consumes only while it holds it; losing
        it stops the consumer (requests in hand are handed back, sends in flight are
        recorded) and the notifier stands by again. Stopping releases the lease."""
        if self.lease_ttl is None:
            await self._run_consumer(task_status=task_status)
            return
        lease = await self._open_lease()
        started = False

        def ready() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        def standby() -> None:
            # Once per acquire: at start, and after each loss of the lease.
            log.info("notifier stands by: another holds the send lease", worker=self.worker)
            ready()

        try:
            while True:
                await lease.acquire(on_standby=standby)
                self.limiter.hold_off(self.provider.sender)
                async with anyio.create_task_group() as tg:
                    # Renewal goes on through a shutdown until the consumer (and so every
                    # send in flight) is done, so those sends stay within the lease.
                    renewing = anyio.CancelScope(shield=True)
                    tg.start_soon(self._keep_lease, lease, renewing, tg.cancel_scope)
                    tg.start_soon(self._consume_while_held, renewing, ready)
        finally:
            # After the consumer's task group: sends in flight are recorded by now.
            await lease.release()

    async def _keep_lease(
        self, lease: SendLease, renewing: anyio.CancelScope, consuming: anyio.CancelScope
    ) -> None:
        """Renew ``lease`` (in ``renewing``, shielded) until it is lost, then cut off the
        sends awaiting an answer and stop ``consuming``; or until ``renewing`` is
        cancelled (the consumer is done: the lease is released next)."""
        with renewing:
            await lease.hold()
        if renewing.cancelled_caught:
            return
        for cut in list(self._cut_offs):
            cut.cancel()
        consuming.cancel()  # stand by again

    async def _consume_while_held(
        self, renewing: anyio.CancelScope, ready: Callable[[], None]
    ) -> None:
        try:
            await self._run_consumer(on_bound=ready)
        finally:
            renewing.cancel()  # sends in flight are recorded: renewing may stop

    async def _run_consumer(
        self,
        *,
        on_bound: Callable[[], None] | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        def on_ready() -> None:
            log.info(
                "notifier ready",
                worker=self.worker,
                provider=self.provider.name,
                consumer=self.durable,
            )
            if on_bound is not None:
                on_bound()

        await run_pull_consumer(
            self._subscribe,
            self._consume,
            what="notifier",
            stream=self.stream,
            retry_initial=self.retry_initial,
            retry_max=self.retry_max,
            on_ready=on_ready,
            task_status=task_status,
        )

    async def _open_lease(self) -> SendLease:
        """Open the store (retrying while NATS is away) and make this notifier's lease."""
        delay = self.retry_initial
        while True:
            try:
                await self.store.open()
                break
            except TransportError as exc:
                log.warning("notifier store unavailable; retrying", error=repr(exc))
            await anyio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
        assert self.lease_ttl is not None
        self.lease = SendLease(
            self.store.kv,
            sender=self.provider.sender,
            owner=self.worker,
            clock=self.clock,
            ttl=self.lease_ttl,
            api_timeout=self.api_timeout,
        )
        return self.lease

    def may_send(self) -> bool:
        """True unless this notifier runs under a send lease it does not hold, or holds
        with less than a renewal interval left (its renewals are failing: a send started
        now would likely be cut off, in doubt, when the lease ends)."""
        if self.lease_ttl is None:
            return True
        lease = self.lease
        return lease is not None and lease.owns() and lease.remaining() >= lease.heartbeat

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.claim_ttl,
            # Retries are NAKs with a delay, counted as deliveries: never give up here;
            # the store counts real attempts and decides when a request is dead.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
        )

    async def _subscribe(self) -> PullBatches | None:
        await self.store.open()
        js = self.transport.jetstream(timeout=self.api_timeout)
        with mapped_errors(f"notifier consumer {self.durable}"):
            try:
                await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                return None
            try:
                # Creates the consumer, or updates the editable fields of an existing
                # one (ack wait, pending limit) to this notifier's settings.
                await js.add_consumer(self.stream, config=self.consumer_config())
            except nats.js.errors.BadRequestError as exc:
                log.warning(
                    "notifier consumer exists with another configuration; using it",
                    consumer=self.durable,
                    error=exc.description,
                )
            return await PullBatches.bind(
                self.transport, self.stream, self.durable, max_batch=self.concurrency
            )

    async def _consume(self, psub: PullBatches) -> None:
        """Fetch as many requests as there are free slots; each is handled by a task of
        this task group and frees its slot when done. A failed fetch ends the loop, but
        only after the requests in hand are done (the caller then subscribes again)."""
        failure: TransportError | None = None
        async with anyio.create_task_group() as tg:
            while failure is None:
                await self._slots.acquire()
                held = 1
                while held < self.concurrency:
                    try:
                        self._slots.acquire_nowait()
                    except anyio.WouldBlock:
                        break
                    held += 1
                msgs: list[Msg] = []
                try:
                    with mapped_errors("notifier fetch"):
                        msgs = await psub.fetch(held, timeout=self.fetch_timeout)
                except RequestTimeout:
                    pass  # idle: nothing pending when the fetch expired
                except TransportError as exc:
                    failure = exc
                finally:
                    for _ in range(held - len(msgs)):
                        self._slots.release()
                if not msgs:
                    self._notify()
                for msg in msgs:
                    tg.start_soon(self._handle_in_slot, msg)
        assert failure is not None
        raise failure

    async def _handle_in_slot(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except TransportError as exc:
            self.stats.errors += 1
            log.warning("notification request handed back", subject=msg.subject, error=repr(exc))
            await self._settle_msg(msg, "nak", _TRANSIENT_DELAY)
        except Exception:
            # A bug must not take the other notifications down with it: hand the
            # request back for much later and say so loudly.
            self.stats.errors += 1
            log.exception("notification request failed", subject=msg.subject)
            await self._settle_msg(msg, "nak", self.claim_ttl)
        finally:
            self._slots.release()
            self._notify()

    # -- one request ----------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        """One request, in a span of its own when tracing (a child of the request's
        ``traceparent`` when it carries one, else the root of a new trace)."""
        tracer = self.tracer
        if tracer is None:
            await self._handle_request(msg, None)
            return
        span = tracer.start(
            "notify",
            msg.headers or None,
            {"messaging.destination.name": msg.subject, "notify.worker": self.worker},
            "consumer",
        )
        try:
            await self._handle_request(msg, span)
        except BaseException as exc:
            if span is not None:
                span.end(exc)
            raise
        if span is not None:
            span.end()

    async def _handle_request(self, msg: Msg, span: Span | None) -> None:
        self.stats.received += 1
        try:
            request = decode_request(msg.data).data
        except msgspec.DecodeError as exc:
            log.error("undecodable notification request", subject=msg.subject, error=str(exc))
            await self._settle_msg(msg, "term")
            return
        nid = request.notification_id
        if _ID.fullmatch(nid) is None:
            log.error("notification request with a bad id", subject=msg.subject)
            await self._settle_msg(msg, "term")
            return
        if span is not None:
            span.set_attribute("notification.id", nid)
        try:
            await self._process(msg, request)
        except anyio.get_cancelled_exc_class():
            # Stopping before the send: give the claim (if this process took it) and the
            # request back now, so the next notifier need not wait for them to expire.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.api_timeout):
                if nid not in self._sending:
                    try:
                        await self.store.release(nid, self.worker)
                    except TransportError as exc:
                        log.debug("releasing a claim failed", error=repr(exc))
                await self._settle_msg(msg, "nak")
            raise

    async def _process(self, msg: Msg, request: NotifyRequest) -> None:
        nid = request.notification_id
        now = self.clock.time()
        template = NotificationRecord(
            notification_id=nid,
            state="claimed",
            buyer_id=request.buyer_id,
            window_id=request.window_id,
            product_id=request.product_id,
            provider=self.provider.name,
        )
        # A request without the field was recorded by a product that predates it, which
        # asked only for opted-in buyers: only an explicit ``false`` is refused.
        if request.whatsapp_opt_in is False:
            reason = "buyer has not opted in"
            record = await self.store.refuse(template, at=now, reason=reason)
            self.stats.refused += 1
            log.info("notification refused: no opt-in", notification_id=nid, reason=reason)
            await self._announce(record)
            await self._settle_msg(msg, "ack")
            return
        result = await self.store.claim(template, self.worker, now=now, ttl=self.claim_ttl)
        if isinstance(result, Settled):
            self.stats.settled += 1
            await self._announce(result.record)
            await self._settle_msg(msg, "ack")
            return
        if isinstance(result, Busy):
            self.stats.busy += 1
            await self._settle_msg(msg, "nak", min(result.retry_in, self.claim_ttl) + 0.05)
            return
        await self._attempt(msg, request, result)

    async def _attempt(self, msg: Msg, request: NotifyRequest, claim: Claimed) -> None:
        previous = sum(1 for a in claim.record.attempts if a.outcome in ("retry", "in_doubt"))
        attempt = previous + 1
        if self.backoff.exhausted(previous):
            await self._decide(msg, claim, "dead", attempt, None, "attempts exhausted", None)
            return
        outbound = render(request, self.template)
        await self.limiter.acquire(self.provider.sender, outbound.to)
        nid = request.notification_id
        if not self.may_send():
            # The send lease ended (or is about to) while this waited for its slot:
            # another notifier may be sending from the number soon. Hand it back unsent.
            await self.store.release(nid, self.worker)
            await self._settle_msg(msg, "nak")
            return
        # From here to the verdict, cancellation (a shutdown) waits: cancelling between
        # the provider taking the message and our record of it would send it twice. The
        # claim's lifetime bounds the wait; after it, another notifier may take over.
        self._sending.add(nid)
        try:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.claim_ttl
                await self._send(msg, request, claim, outbound, attempt)
        finally:
            self._sending.discard(nid)

    async def _send(
        self, msg: Msg, request: NotifyRequest, claim: Claimed, outbound: Outbound, attempt: int
    ) -> None:
        nid = request.notification_id
        started = self.clock.monotonic()
        try:
            sent: Sent = await self._provider_send(outbound)
        except RetryableSendError as exc:
            if self.backoff.exhausted(attempt):
                await self._decide(msg, claim, "dead", attempt, exc.code, exc.reason, None)
                return
            delay = self.backoff.delay(attempt, exc.retry_after_s)
            await self.store.settle(
                claim,
                "retry",
                at=self.clock.time(),
                worker=self.worker,
                code=exc.code,
                reason=exc.reason,
            )
            self.stats.retried += 1
            log.info(
                "notification attempt",
                notification_id=nid,
                attempt=attempt,
                outcome="retry",
                code=exc.code,
                reason=exc.reason,
                retry_in=round(delay, 3),
                seconds=round(self.clock.monotonic() - started, 4),
            )
            await self._settle_msg(msg, "nak", delay)
            return
        except PermanentSendError as exc:
            await self._decide(msg, claim, "failed", attempt, exc.code, exc.reason, None)
            return
        log.info(
            "notification attempt",
            notification_id=nid,
            attempt=attempt,
            outcome="sent",
            message_id=sent.message_id,
            seconds=round(self.clock.monotonic() - started, 4),
        )
        await self._decide(msg, claim, "sent", attempt, None, "", sent.message_id)

    async def _provider_send(self, outbound: Outbound) -> Sent:
        """``provider.send``, cut off if the send lease ends before the answer (no
        checkpoint since :meth:`may_send`: the scope is registered before any wait)."""
        with anyio.CancelScope() as cut:
            self._cut_offs.add(cut)
            try:
                return await self.provider.send(outbound)
            finally:
                self._cut_offs.discard(cut)
        raise RetryableSendError(
            "cut off: the send lease ended before the provider answered (it may have the message)"
        )

    async def _decide(
        self,
        msg: Msg,
        claim: Claimed,
        outcome: str,
        attempt: int,
        code: int | None,
        reason: str,
        message_id: str | None,
    ) -> None:
        nid = claim.record.notification_id
        if outcome == "sent":
            record = await self._record_sent(claim, message_id)
            self.stats.sent += 1
        else:
            assert outcome in ("failed", "dead")
            record = await self.store.settle(
                claim,
                "failed" if outcome == "failed" else "dead",
                at=self.clock.time(),
                worker=self.worker,
                code=code,
                reason=reason,
            )
            if outcome == "failed":
                self.stats.failed += 1
            else:
                self.stats.dead += 1
            log.warning(
                "notification attempt",
                notification_id=nid,
                attempt=attempt,
                outcome=outcome,
                code=code,
                reason=reason,
            )
        await self._announce(record)
        await self._settle_msg(msg, "term" if outcome == "dead" else "ack")

    async def _record_sent(self, claim: Claimed, message_id: str | None) -> NotificationRecord:
        """The provider has it: record that, retrying the store for a while, since a
        request redelivered without this record would be sent again."""
        give_up = self.clock.monotonic() + self.claim_ttl / 2
        delay = self.retry_initial
        while True:
            try:
                return await self.store.settle(
                    claim,
                    "sent",
                    at=self.clock.time(),
                    worker=self.worker,
                    message_id=message_id,
                )
            except TransportError as exc:
                if self.clock.monotonic() + delay > give_up:
                    log.error(
                        "notification sent but not recorded: it may be sent again",
                        notification_id=claim.record.notification_id,
                        error=repr(exc),
                    )
                    raise
                log.warning("recording a sent notification failed; retrying", error=repr(exc))
                await anyio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    async def _announce(self, record: NotificationRecord) -> None:
        """Publish the record's verdict into the event stream."""
        await self._publish_event(*outcome_event(record, self.prefix, self.clock.time()))

    async def _publish_event(self, subject: str, event_id: str, body: bytes) -> None:
        """Into the event stream, idempotent by ``event_id`` (``Nats-Msg-Id``)."""
        js = self.transport.jetstream(timeout=self.api_timeout)
        with mapped_errors(f"notification event {event_id}"):
            await js.publish(subject, body, stream=self.event_stream, headers={_MSG_ID: event_id})

    async def apply_status(self, update: StatusUpdate) -> NotificationRecord | None:
        """Merge a provider status callback into the store; a ``failed`` that comes
        after the ``sent`` verdict is announced (``seq`` 3, once: see
        :mod:`iceshop.notify.events`). A failure to publish raises
        :class:`~actors.errors.TransportError` (the receiver answers 500 and the
        provider calls again; the record says the event is still owed)."""
        record = await self.store.apply_status(update)
        if record is None or not needs_late_failure_event(record):
            return record
        await self._publish_event(*late_failure_event(record, self.prefix, self.clock.time()))
        await self.store.mark_failure_announced(record.notification_id)
        log.warning(
            "notification failed after it was sent",
            notification_id=record.notification_id,
            code=record.error_code,
            reason=record.reason,
        )
        return record

    @staticmethod
    async def _settle_msg(msg: Msg, how: str, delay: float = 0.0) -> None:
        """Ack, NAK (with ``delay``) or terminate ``msg``; best effort: a lost ack only
        means a redelivery, which the store recognises."""
        with anyio.CancelScope(shield=True):
            try:
                if how == "ack":
                    await msg.ack()
                elif how == "term":
                    await msg.term()
                else:
                    await msg.nak(delay=delay if delay > 0 else None)
            except (nats.errors.Error, OSError) as exc:
                log.debug("notification request ack failed", how=how, error=repr(exc))

    # -- waiting for progress (tests, tools) -------------------------------------------

    def _event(self) -> anyio.Event:
        if self._progress is None:
            self._progress = anyio.Event()
        return self._progress

    def _notify(self) -> None:
        event, self._progress = self._progress, None
        if event is not None:
            event.set()

    async def idle(self) -> None:
        """Return once the consumer has nothing pending and nothing awaits an ack
        (retries waiting for their delay count as awaiting). Bound it with
        ``anyio.fail_after``."""
        js = self.transport.jetstream(timeout=self.api_timeout)
        while True:
            progress = self._event()
            with mapped_errors(f"notifier consumer {self.durable}"):
                try:
                    info = await js.consumer_info(self.stream, self.durable)
                except nats.js.errors.NotFoundError:
                    info = None
            if info is not None and not info.num_pending and not info.num_ack_pending:
                return
            # Progress is signalled by the holder of the send lease only; a standby (or
            # a notifier not yet consuming) looks again after a fetch's time.
            with anyio.move_on_after(self.fetch_timeout):
                await progress.wait()

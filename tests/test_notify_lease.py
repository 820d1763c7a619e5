"""The send lease: several notifiers on one sending number send as one.

Only the notifier holding the number's lease (:mod:`iceshop.notify.lease`) pulls and
sends, so the rate limit holds for all of them together; a standby takes over when the
holder stops (at once: the lease is released) or dies (when the lease lapses), and no
notification is lost or sent twice across the handover."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from actors import VirtualClock
from actors.nats import NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.notify import NotificationStore
from iceshop.notify.lease import SendLease
from iceshop.notify.provider import Outbound, Sent
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import make_request, publish_requests
from tests.test_notify_worker import Rig, notifier_on, whatsapp

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

#: Long: no lapse may happen where none is wanted, even on a loaded machine.
LEASE_TTL = 10.0
SENDER = "100200300"


def assert_rate(api: FakeCloudApi, rate: float) -> None:
    """The notifiers' slots are at least ``1 / rate`` apart, so ``rate + 1`` sends span at
    least a second and a half-open second of *departures* holds at most ``rate``. Arrivals
    are departures plus a varying latency, which can pull the ``rate + 1``-th send (exactly
    one second after the first) inside the window, hence the tolerance of one; a second
    extra would need the latency to vary by more than ``1 / rate``. Two notifiers each
    sending at ``rate`` would put ``2 * rate`` there."""
    assert api.max_in_window(1.0) <= rate + 1, api.per_second()


async def test_two_notifiers_in_a_storm_keep_the_rate_together(nats_server: NatsServer) -> None:
    rate = 40.0
    requests = [make_request(i) for i in range(100)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, rate=rate, lease_ttl=LEASE_TTL) as one,
        notifier_on(nats_server.url, provider, rate=rate, lease_ttl=LEASE_TTL) as two,
    ):
        api.fail_next(15, status=429, code=130429)
        await publish_requests(one.transport, requests)
        with anyio.fail_after(30):
            await one.events.wait_for(100)
            await one.notifier.idle()
        stats = (one.notifier.stats.sent, two.notifier.stats.sent)
        assert one.notifier.lease is not None and one.notifier.lease.owns()
        assert two.notifier.lease is not None and not two.notifier.lease.owns()

    sent = Counter(api.accepted_ids())
    assert sorted(sent) == [r.notification_id for r in requests]
    assert set(sent.values()) == {1}
    assert len(api.arrivals) == 115
    assert stats == (100, 0)  # the first took the lease; the second stood by
    assert_rate(api, rate)


async def test_a_stopped_holder_hands_over_at_once(nats_server: NatsServer) -> None:
    rate = 20.0
    requests = [make_request(i) for i in range(50)]
    rigs: list[Rig] = []

    async def run_rig(stop: anyio.Event, *, task_status: TaskStatus[None]) -> None:
        # A lease of 30 s: a takeover within the test can only be the hand-over.
        async with notifier_on(nats_server.url, provider, rate=rate, lease_ttl=30.0) as rig:
            rigs.append(rig)
            task_status.started()
            await stop.wait()

    async with FakeCloudApi() as api, whatsapp(api) as provider, anyio.create_task_group() as tg:
        stop_first, stop_second = anyio.Event(), anyio.Event()
        await tg.start(run_rig, stop_first)
        await tg.start(run_rig, stop_second)
        first, second = rigs
        await publish_requests(first.transport, requests)
        with anyio.fail_after(20):
            await api.wait_accepted(15)
        assert second.notifier.stats.sent == 0
        stop_first.set()
        # The first stops: it finishes its sends in flight and releases the lease.
        with anyio.fail_after(20):
            await second.events.wait_for(50)
            await second.notifier.idle()
        assert second.notifier.lease is not None and second.notifier.lease.owns()
        stop_second.set()

    sent = Counter(api.accepted_ids())
    assert sorted(sent) == [r.notification_id for r in requests]
    assert set(sent.values()) == {1}
    assert first.notifier.stats.sent >= 15
    assert second.notifier.stats.sent == 50 - first.notifier.stats.sent > 0
    assert_rate(api, rate)


class Stepped(SendLease):
    """A lease whose loop says when it has gone to sleep (read done, nothing taken), so a
    test on a virtual clock knows when to move the clock and wake it."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.asleep = anyio.Event()

    async def _sleep(self, seconds: float) -> None:
        self.asleep.set()
        await super()._sleep(seconds)

    async def step(self, clock: VirtualClock, now: float) -> None:
        """Move the clock to ``now`` and let this lease's loop run once more."""
        self.asleep = anyio.Event()
        clock.set(now)
        self.wake()
        await self.asleep.wait()


async def settle() -> None:
    """Let the other tasks run what they can without I/O (a woken lease loop)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def lease_kv(url: str) -> AsyncIterator[Any]:
    async with NatsTransport(url) as transport:
        store = NotificationStore(transport)
        await store.open()
        yield store.kv


async def test_a_lease_lapses_only_after_its_holder_stopped_trusting_it(
    nats_server: NatsServer,
) -> None:
    """A holder that stops renewing (a crash, a pause) is taken over ``ttl`` after a
    standby saw its last renewal, and by then the holder's own validity has ended."""
    clock = VirtualClock()
    ttl = 4.0
    async with lease_kv(nats_server.url) as kv, anyio.create_task_group() as tg:
        holder = SendLease(kv, sender=SENDER, owner="a", clock=clock, ttl=ttl)
        standby = Stepped(kv, sender=SENDER, owner="b", clock=clock, ttl=ttl)
        with anyio.fail_after(5):
            await holder.acquire()
        assert holder.owns()
        taken = anyio.Event()

        async def take() -> None:
            await standby.acquire()
            taken.set()

        tg.start_soon(take)
        with anyio.fail_after(5):
            await standby.asleep.wait()  # it saw the holder's lease at t = 0
            # The holder never renews (it died). Its validity ends first...
            await standby.step(clock, ttl - holder.margin)
            assert not holder.owns() and standby.revision is None
            # ...and the standby still waits until ttl after it saw the last renewal.
            await standby.step(clock, ttl - 0.01)
            assert standby.revision is None and not taken.is_set()
            clock.set(ttl)
            standby.wake()
            await taken.wait()
        assert standby.owns()
        assert holder.valid_until < standby.valid_until - ttl + holder.margin
        # The old holder's renewal is refused (compare-and-set on its old revision): it
        # cannot come back, and holding it reports the loss at once.
        assert holder.revision is not None
        assert await holder._write(holder.revision) is None
        with anyio.fail_after(5):
            await holder.hold()
        assert holder.lost == 1 and not holder.owns()
        await standby.release()
        other = SendLease(kv, sender=SENDER, owner="c", clock=clock, ttl=ttl)
        with anyio.fail_after(5):  # released: taken at once, no lapse to wait for
            await other.acquire()
        assert other.owns()


async def test_early_wakes_do_not_postpone_renewal(nats_server: NatsServer) -> None:
    """Woken (virtual time moved) more often than it renews, the holder still renews
    every ``heartbeat`` and never loses its lease."""
    clock = VirtualClock()
    async with lease_kv(nats_server.url) as kv, anyio.create_task_group() as tg:
        holder = SendLease(kv, sender=SENDER, owner="a", clock=clock, ttl=4.0)
        with anyio.fail_after(5):
            await holder.acquire()
        first = holder.revision
        lost = anyio.Event()

        async def hold() -> None:
            await holder.hold()
            lost.set()

        tg.start_soon(hold)
        await settle()  # holding from t = 0: the first renewal is due at t = 1
        renewals = 0
        last = first
        with anyio.fail_after(10):
            for step in range(1, 41):  # 10 s of virtual time in 0.25 s steps
                clock.set(step * 0.25)
                holder.wake()
                if step % 4 == 0:  # a heartbeat (1 s) is due: wait for the renewal
                    while holder.revision == last and not lost.is_set():
                        await anyio.sleep(0.005)
                    if holder.revision is not None:
                        renewals += 1
                        last = holder.revision
                else:
                    await settle()  # the wake is handled: re-checked, asleep again
                assert not lost.is_set(), f"lost at t={clock.monotonic()}"
        assert holder.owns() and renewals == 10
        tg.cancel_scope.cancel()


async def test_a_standby_reports_standing_by_once_not_at_each_renewal(
    nats_server: NatsServer,
) -> None:
    clock = VirtualClock()
    async with lease_kv(nats_server.url) as kv, anyio.create_task_group() as tg:
        holder = SendLease(kv, sender=SENDER, owner="a", clock=clock, ttl=4.0)
        standby = Stepped(kv, sender=SENDER, owner="b", clock=clock, ttl=4.0)
        with anyio.fail_after(5):
            await holder.acquire()
        calls: list[float] = []
        tg.start_soon(standby.acquire, lambda: calls.append(clock.monotonic()))
        with anyio.fail_after(10):
            await standby.asleep.wait()
            for renewal in range(1, 6):
                assert holder.revision is not None
                revision = await holder._write(holder.revision)  # a renewal
                assert revision is not None
                holder.revision = revision
                await standby.step(clock, renewal * 1.0)
        assert calls == [0.0]  # five new revisions seen, one report
        assert standby.revision is None
        tg.cancel_scope.cancel()


class Hanging:
    """A provider that takes sends and never answers, unless ``answer`` is set first."""

    name = "hanging"
    sender = SENDER

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cut_off = anyio.Event()
        self.calls = 0
        self.answer = False

    async def send(self, msg: Outbound) -> Sent:
        self.calls += 1
        self.started.set()
        if self.answer:
            return Sent(message_id=f"m-{msg.notification_id}")
        try:
            await anyio.sleep_forever()
        finally:
            self.cut_off.set()
        raise AssertionError("unreachable")


async def wait_for_attempts(rig: Rig, nid: str) -> tuple[str, ...]:
    """Poll the record (the verdict of a retry publishes no event)."""
    while True:
        record = await rig.store.get(nid)
        if record is not None and record.attempts:
            return tuple(a.outcome for a in record.attempts)
        await anyio.sleep(0.01)


async def test_a_send_in_flight_is_cut_off_when_the_lease_is_lost(
    nats_server: NatsServer,
) -> None:
    """No send of a holder outlasts its lease: the provider call still waiting when the
    lease is taken is cancelled and recorded as a retry (the provider may have it)."""
    clock = VirtualClock()
    provider = Hanging()
    async with notifier_on(nats_server.url, provider, clock=clock, lease_ttl=4.0) as rig:
        lease = rig.notifier.lease
        assert lease is not None and lease.owns()
        await publish_requests(rig.transport, [make_request(1)])
        with anyio.fail_after(10):
            await provider.started.wait()
            # Another notifier takes the key (as after a lapse seen elsewhere); the
            # holder's next renewal is refused.
            await lease.kv.put(lease.key, b"thief")
            clock.set(lease.heartbeat)
            lease.wake()
            await provider.cut_off.wait()
            outcomes = await wait_for_attempts(rig, "n00001")
        assert not lease.owns() and lease.lost == 1
        assert rig.notifier.stats.retried == 1 and rig.notifier.stats.sent == 0
        assert outcomes == ("retry",)
        record = await rig.store.get("n00001")
        assert record is not None and "cut off" in record.attempts[0].reason


async def test_no_send_starts_with_less_than_a_renewal_of_lease_left(
    nats_server: NatsServer,
) -> None:
    """Renewals late (virtual time moved, the lease not woken): a request is handed back
    unsent; once the lease is renewed it is sent."""
    clock = VirtualClock()
    provider = Hanging()
    provider.answer = True
    async with notifier_on(nats_server.url, provider, clock=clock, lease_ttl=4.0) as rig:
        lease = rig.notifier.lease
        assert lease is not None and lease.owns()
        clock.set(lease.valid_until - lease.heartbeat + 0.01)  # 0.99 s left, not renewed
        assert lease.owns()
        await publish_requests(rig.transport, [make_request(2)])
        with anyio.fail_after(10):
            while rig.notifier.stats.received < 3:  # handed back, delivered again...
                await anyio.sleep(0.01)
            assert provider.calls == 0
            lease.wake()  # the renewal runs: a full validity again
            await rig.events.wait_for(1)
        assert provider.calls == 1 and rig.notifier.stats.sent == 1
        assert lease.owns() and lease.lost == 0

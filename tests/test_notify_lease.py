"""The send lease: several notifiers on one sending number send as one.

Only the notifier holding the number's lease (:mod:`iceshop.notify.lease`) pulls and
sends, so the rate limit holds for all of them together; a standby takes over when the
holder stops (at once: the lease is released) or dies (when the lease lapses), and no
notification is lost or sent twice across the handover."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from anyio.abc import TaskStatus

from actors import RealClock
from actors.nats import NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.notify import NotificationStore
from iceshop.notify.lease import SendLease
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import make_request, publish_requests
from tests.test_notify_worker import Rig, notifier_on, whatsapp

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LEASE_TTL = 1.0


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


async def test_a_lease_lapses_only_after_its_holder_stopped_trusting_it(
    nats_server: NatsServer,
) -> None:
    """A holder that stops renewing (a crash, a pause) is taken over ``ttl`` after a
    standby saw its last renewal, and by then the holder's own validity has ended."""
    clock = RealClock()
    async with NatsTransport(nats_server.url) as transport:
        store = NotificationStore(transport)
        await store.open()
        holder = SendLease(store.kv, sender="100200300", owner="a", clock=clock, ttl=LEASE_TTL)
        standby = SendLease(store.kv, sender="100200300", owner="b", clock=clock, ttl=LEASE_TTL)
        with anyio.fail_after(5):
            await holder.acquire()
        assert holder.owns()
        # The holder never renews (it died): the standby must wait out the lapse.
        with anyio.fail_after(10):
            await standby.acquire()
        assert standby.owns()
        assert not holder.owns()
        assert holder.valid_until < standby.valid_until - LEASE_TTL + holder.margin
        # The old holder's renewal is refused (compare-and-set on its old revision): it
        # cannot come back, and holding it reports the loss at once.
        assert holder.revision is not None
        assert await holder._write(holder.revision) is None
        with anyio.fail_after(5):
            await holder.hold()
        assert holder.lost == 1 and not holder.owns()
        await standby.release()
        other = SendLease(store.kv, sender="100200300", owner="c", clock=clock, ttl=LEASE_TTL)
        with anyio.fail_after(2):  # released: taken at once, no lapse to wait for
            await other.acquire()
        assert other.owns()

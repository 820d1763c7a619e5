"""``PullBatches`` against a real nats-server: batches in stream order, idleness as
``RequestTimeout``, one pull request at a time, nothing delivered ever dropped (also
when it arrives after a fetch gave up, or while the consumer is being unsubscribed), a
deleted consumer as ``TransportError``, and one ack for a whole batch on an
``AckPolicy.ALL`` consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo

from actors.errors import RequestTimeout, TransportError
from actors.nats import Msg, NatsTransport, PullBatches
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.shop_client import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

STREAM = "PULL_TEST"
DURABLE = "pull-test"


@asynccontextmanager
async def consumer_on(
    url: str, ack_policy: AckPolicy = AckPolicy.ALL, max_batch: int = 64
) -> AsyncIterator[tuple[NatsTransport, PullBatches]]:
    async with NatsTransport(url) as transport:
        js = transport.jetstream()
        await js.add_stream(name=STREAM, subjects=["pull.>"])
        await js.add_consumer(
            STREAM,
            config=ConsumerConfig(
                durable_name=DURABLE,
                ack_policy=ack_policy,
                ack_wait=30.0,  # a redelivery inside a test means a nak, not a timeout
                max_ack_pending=10_000,
            ),
        )
        async with await PullBatches.bind(
            transport, STREAM, DURABLE, max_batch=max_batch
        ) as batches:
            yield transport, batches


async def publish(transport: NatsTransport, start: int, count: int) -> None:
    js = transport.jetstream()
    for i in range(start, start + count):
        await js.publish(f"pull.n{i % 4}", str(i).encode(), stream=STREAM)


async def consumer_info(transport: NatsTransport) -> ConsumerInfo:
    info: ConsumerInfo = await transport.jetstream().consumer_info(STREAM, DURABLE)
    return info


async def fetch_all(batches: PullBatches, count: int, n: int = 64) -> list[list[int]]:
    """Fetch (and ack) until ``count`` messages came; the payloads, batch by batch."""
    got: list[list[int]] = []
    with anyio.fail_after(10):
        while sum(map(len, got)) < count:
            try:
                msgs = await batches.fetch(n, timeout=1.0)
            except RequestTimeout:
                continue
            got.append([int(msg.data) for msg in msgs])
            await msgs[-1].ack()
    return got


async def test_batches_come_in_stream_order(nats_url: str) -> None:
    async with consumer_on(nats_url, max_batch=16) as (transport, batches):
        await publish(transport, 0, 100)
        got = await fetch_all(batches, 100, n=20)
        assert [i for batch in got for i in batch] == list(range(100))
        assert max(map(len, got)) <= 16  # max_batch caps a fetch
        assert batches.requests <= len(got)


async def test_an_idle_consumer_times_out_within_its_timeout(nats_url: str) -> None:
    async with consumer_on(nats_url) as (_transport, batches):
        started = anyio.current_time()
        with pytest.raises(RequestTimeout):
            await batches.fetch(10, timeout=0.2)
        elapsed = anyio.current_time() - started
        assert 0.15 <= elapsed < 1.0, elapsed


async def test_messages_published_after_a_timeout_come_with_the_next_fetch(
    nats_url: str,
) -> None:
    async with consumer_on(nats_url) as (transport, batches):
        with pytest.raises(RequestTimeout):
            await batches.fetch(10, timeout=0.2)
        await publish(transport, 0, 3)
        assert [i for batch in await fetch_all(batches, 3) for i in batch] == [0, 1, 2]


async def abandon_a_fetch(batches: PullBatches) -> None:
    """Start a long fetch and give up on it once its pull request is out: the request
    stays open on the server with nobody waiting."""
    sent = batches.requests
    async with anyio.create_task_group() as tg:
        tg.start_soon(batches.fetch, 10, 5.0)
        await until(lambda: _requests_above(batches, sent), "a pull request sent")
        tg.cancel_scope.cancel()


async def _requests_above(batches: PullBatches, count: int) -> bool:
    return batches.requests > count


async def test_deliveries_to_an_abandoned_fetch_stay_for_the_next(nats_url: str) -> None:
    async with consumer_on(nats_url) as (transport, batches):
        await abandon_a_fetch(batches)
        await publish(transport, 0, 5)
        await until(lambda: _buffered(batches, 5), "the deliveries buffered")
        with anyio.fail_after(5):
            msgs = await batches.fetch(10, timeout=1.0)
        assert [int(msg.data) for msg in msgs] == [0, 1, 2, 3, 4]
        assert batches.requests == 1  # served from the buffer, no new request


async def test_a_fetch_waits_on_the_open_request_instead_of_adding_one(nats_url: str) -> None:
    async with consumer_on(nats_url) as (transport, batches):
        await abandon_a_fetch(batches)  # its request stays open for 5 s
        with pytest.raises(RequestTimeout):
            await batches.fetch(10, timeout=0.2)
        await publish(transport, 0, 2)
        with anyio.fail_after(5):
            msgs = await batches.fetch(10, timeout=1.0)
        assert [int(msg.data) for msg in msgs][:1] == [0]
        assert batches.requests == 1


async def test_deliveries_after_a_fetch_gave_up_are_not_lost(nats_url: str) -> None:
    """Fetches that give up after 2 ms while messages are being published: whatever
    comes after a fetch gave up is returned by a later one, each message once."""
    total = 600
    async with consumer_on(nats_url) as (transport, batches):
        seen: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish, transport, 0, total)
            with anyio.fail_after(20):
                while len(seen) < total:
                    try:
                        msgs = await batches.fetch(32, timeout=0.002)
                    except RequestTimeout:
                        continue
                    seen.extend(int(msg.data) for msg in msgs)
                    await msgs[-1].ack()
        assert seen == list(range(total))
        info = await until(lambda: _settled(transport), "every delivery acknowledged", timeout=5.0)
        assert info.num_redelivered == 0  # nothing came back because it was dropped
        assert batches.buffered == 0


async def _settled(transport: NatsTransport) -> ConsumerInfo | None:
    info = await consumer_info(transport)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def test_a_deleted_consumer_makes_fetch_raise(nats_url: str) -> None:
    async with consumer_on(nats_url) as (transport, batches):
        failure: TransportError | None = None

        async def fetch_until_failure() -> None:
            nonlocal failure
            with anyio.fail_after(5):
                while True:
                    try:
                        await batches.fetch(10, timeout=1.0)
                    except RequestTimeout:
                        continue
                    except TransportError as exc:
                        failure = exc
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch_until_failure)
            await until(lambda: _requests_above(batches, 0), "a pull request outstanding")
            await transport.jetstream().delete_consumer(STREAM, DURABLE)
        assert failure is not None
        assert not isinstance(failure, RequestTimeout)
        assert "409" in str(failure)
        with pytest.raises(TransportError) as again:  # and so does every later fetch
            await batches.fetch(10, timeout=0.2)
        assert not isinstance(again.value, RequestTimeout)


@pytest.mark.parametrize("description", ["Leadership Change", "Exceeded MaxWaiting"])
async def test_a_request_ended_by_the_server_is_followed_by_a_new_one(
    nats_url: str, description: str
) -> None:
    """A 409 that ends one request (the consumer's leader moved, or too many requests
    wait) is not a failure: the next fetch asks again and gets what came meanwhile."""
    async with consumer_on(nats_url) as (transport, batches):
        with pytest.raises(RequestTimeout):
            await batches.fetch(10, timeout=0.2)  # a request outstanding, nothing to get
        sent = batches.requests
        status = Msg(
            _client=transport.client,
            subject="status",
            reply="",
            data=b"",
            headers={"Status": "409", "Description": description},
        )
        await batches._on_msg(status)
        await publish(transport, 0, 3)
        assert await fetch_all(batches, 3) == [[0, 1, 2]]
        assert batches.requests == sent + 1


async def test_acking_the_last_message_acknowledges_the_batch(nats_url: str) -> None:
    async with consumer_on(nats_url) as (transport, batches):
        await publish(transport, 0, 10)
        msgs: list[Msg] = []
        with anyio.fail_after(5):
            while len(msgs) < 10:
                try:
                    msgs.extend(await batches.fetch(10, timeout=1.0))
                except RequestTimeout:
                    continue
        assert (await consumer_info(transport)).num_ack_pending == 10
        await msgs[-1].ack()
        await until(lambda: _settled(transport), "the batch acknowledged by one ack", 5.0)


async def test_unsubscribing_hands_buffered_messages_back_at_once(nats_url: str) -> None:
    """Messages delivered but never fetched are NAK'ed on unsubscribe: the next binding
    gets them now, not after the 30 s ack wait."""
    async with consumer_on(nats_url, AckPolicy.EXPLICIT) as (transport, first):
        await abandon_a_fetch(first)
        await publish(transport, 0, 5)
        await until(lambda: _buffered(first, 5), "the deliveries buffered")
        await first.unsubscribe()
        async with await PullBatches.bind(transport, STREAM, DURABLE) as second:
            again = await fetch_all(second, 5)
        assert sorted(i for batch in again for i in batch) == [0, 1, 2, 3, 4]


async def test_rebinding_while_deliveries_flow_loses_nothing(nats_url: str) -> None:
    """Unsubscribing while a pull request is still being served: what the server sent
    before it stopped is taken in and handed back, not sent to an inbox nobody reads
    (on an AckPolicy.ALL consumer the next ack would acknowledge it unseen)."""
    total = 600
    async with consumer_on(nats_url) as (transport, batches):
        seen: list[int] = []
        rebinds = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish, transport, 0, total)
            with anyio.fail_after(20):
                while len(seen) < total:
                    try:
                        msgs = await batches.fetch(8, timeout=1.0)
                    except RequestTimeout:
                        continue
                    seen.extend(int(msg.data) for msg in msgs)
                    await msgs[-1].ack()
                    if len(seen) < total:  # with its request still open: rebind
                        await batches.unsubscribe()
                        batches = await PullBatches.bind(transport, STREAM, DURABLE)
                        rebinds += 1
        await batches.unsubscribe()
        assert sorted(seen) == list(range(total))
        assert len(seen) == total
        assert rebinds > 10


async def _buffered(batches: PullBatches, count: int) -> bool:
    return batches.buffered >= count

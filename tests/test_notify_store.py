"""The notification store on a real JetStream key-value bucket: claims by compare-and-set,
verdicts, and provider statuses merged in any order, any number of times."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from actors.nats import NatsServer, NatsTransport
from iceshop.notify import (
    Busy,
    Claimed,
    NotificationRecord,
    NotificationStore,
    Settled,
    StatusUpdate,
)
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

T0 = 1_800_000_000.0


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[NotificationStore]:
    async with NatsTransport(nats_server.url) as transport:
        s = NotificationStore(transport, max_age=3600)
        await s.open()
        yield s


def template(nid: str = "n1") -> NotificationRecord:
    return NotificationRecord(
        notification_id=nid,
        state="claimed",
        buyer_id="B1",
        window_id="W1",
        product_id="P1",
        provider="whatsapp",
    )


def status(
    status: str, *, nid: str | None = "n1", mid: str = "wamid.1", at: float = T0 + 5
) -> StatusUpdate:
    return StatusUpdate(
        message_id=mid,
        notification_id=nid,
        status=status,  # type: ignore[arg-type]
        at=at,
        recipient="905550000001",
        error_code=131026 if status == "failed" else None,
        error_title="Message undeliverable" if status == "failed" else None,
    )


async def test_open_is_idempotent_and_shared(store: NotificationStore) -> None:
    again = NotificationStore(store.transport)
    await again.open()
    await store.claim(template(), "w1", now=T0, ttl=60)
    record = await again.get("n1")
    assert record is not None
    assert record.claimed_by == "w1"


async def test_a_fresh_claim_is_exclusive_and_an_expired_one_is_taken_over(
    store: NotificationStore,
) -> None:
    first = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(first, Claimed)
    assert first.record.claims == 1
    assert first.record.state == "claimed"

    busy = await store.claim(template(), "w2", now=T0 + 10, ttl=60)
    assert isinstance(busy, Busy)
    assert busy.retry_in == pytest.approx(50)
    assert busy.record.claimed_by == "w1"

    # w1 died: after the TTL the claim is in doubt and w2 may send.
    taken = await store.claim(template(), "w2", now=T0 + 61, ttl=60)
    assert isinstance(taken, Claimed)
    assert taken.record.claimed_by == "w2"
    assert taken.record.claims == 2
    assert [a.outcome for a in taken.record.attempts] == ["in_doubt"]
    assert "w1" in taken.record.attempts[0].reason


async def test_concurrent_claims_give_exactly_one_winner(store: NotificationStore) -> None:
    results: list[object] = []

    async def claim(worker: str) -> None:
        results.append(await store.claim(template("race"), worker, now=T0, ttl=60))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(claim, f"w{i}")
    winners = [r for r in results if isinstance(r, Claimed)]
    assert len(winners) == 1
    assert sum(isinstance(r, Busy) for r in results) == 7


async def test_sent_is_final_for_the_notifier(store: NotificationStore) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    record = await store.settle(claim, "sent", at=T0 + 1, worker="w1", message_id="wamid.1")
    assert record.state == "sent"
    assert record.outcome == "sent"
    assert record.claimed_by is None
    assert record.decided_at == T0 + 1
    again = await store.claim(template(), "w2", now=T0 + 1000, ttl=60)
    assert isinstance(again, Settled)
    assert again.record.message_id == "wamid.1"
    link = await store.link("wamid.1")
    assert link is not None
    assert link.notification_id == "n1"


async def test_retry_releases_the_claim_and_keeps_every_attempt(store: NotificationStore) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    record = await store.settle(
        claim, "retry", at=T0 + 1, worker="w1", code=130429, reason="rate limit"
    )
    assert record.state == "retrying"
    assert record.claimed_by is None
    # Released: another worker claims at once, no TTL to wait for.
    second = await store.claim(template(), "w2", now=T0 + 2, ttl=60)
    assert isinstance(second, Claimed)
    assert second.record.claims == 2
    dead = await store.settle(second, "dead", at=T0 + 3, worker="w2", code=130429, reason="x")
    assert dead.state == "dead"
    assert dead.outcome == "dead"
    assert [(a.outcome, a.by) for a in dead.attempts] == [("retry", "w1"), ("dead", "w2")]
    assert dead.attempts[0].code == 130429
    assert isinstance(await store.claim(template(), "w3", now=T0 + 9, ttl=60), Settled)


async def test_refuse_records_failed_without_an_attempt(store: NotificationStore) -> None:
    record = await store.refuse(template(), at=T0, reason="buyer has not opted in")
    assert (record.state, record.outcome, record.attempts) == ("failed", "failed", ())
    assert isinstance(await store.claim(template(), "w1", now=T0, ttl=60), Settled)


async def test_statuses_are_monotone_idempotent_and_order_free(store: NotificationStore) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    await store.settle(claim, "sent", at=T0 + 1, worker="w1", message_id="wamid.1")

    read = await store.apply_status(status("read", at=T0 + 9))
    assert read is not None
    assert read.state == "read"
    for late in ("delivered", "sent", "read", "delivered"):  # late and duplicate
        after = await store.apply_status(status(late, at=T0 + 3))
        assert after is not None
        assert after.state == "read"
    record = await store.get("n1")
    assert record is not None
    assert record.state == "read"
    assert record.outcome == "sent"
    assert record.status_at == T0 + 9


async def test_failed_is_terminal_and_keeps_the_reason(store: NotificationStore) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    await store.settle(claim, "sent", at=T0 + 1, worker="w1", message_id="wamid.1")
    failed = await store.apply_status(status("failed"))
    assert failed is not None
    assert (failed.state, failed.outcome) == ("failed", "sent")  # our verdict stands
    assert failed.error_code == 131026
    assert failed.reason == "Message undeliverable"
    after = await store.apply_status(status("read"))
    assert after is not None
    assert after.state == "failed"


async def test_a_status_before_our_sent_write_is_merged_not_lost(
    store: NotificationStore,
) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    # The provider's callback overtakes our own write.
    early = await store.apply_status(status("delivered"))
    assert early is not None
    assert early.state == "delivered"
    assert early.message_id == "wamid.1"
    record = await store.settle(claim, "sent", at=T0 + 1, worker="w1", message_id="wamid.1")
    assert record.state == "delivered"
    assert record.outcome == "sent"
    assert [a.outcome for a in record.attempts] == ["sent"]


async def test_a_status_naming_only_the_message_waits_for_the_link(
    store: NotificationStore,
) -> None:
    claim = await store.claim(template(), "w1", now=T0, ttl=60)
    assert isinstance(claim, Claimed)
    parked = await store.apply_status(status("delivered", nid=None, mid="wamid.X"))
    assert parked is None
    again = await store.apply_status(status("delivered", nid=None, mid="wamid.X"))
    assert again is None
    link = await store.link("wamid.X")
    assert link is not None
    assert link.notification_id is None
    assert len(link.parked) == 1

    record = await store.settle(claim, "sent", at=T0 + 1, worker="w1", message_id="wamid.X")
    assert record.state == "delivered"  # the parked status was applied on linking
    link = await store.link("wamid.X")
    assert link is not None
    assert (link.notification_id, link.parked) == ("n1", ())

    read = await store.apply_status(status("read", nid=None, mid="wamid.X"))
    assert read is not None
    assert read.state == "read"


async def test_a_status_for_an_unknown_notification_creates_its_record(
    store: NotificationStore,
) -> None:
    record = await store.apply_status(status("sent", nid="n9", mid="wamid.9"))
    assert record is not None
    assert (record.state, record.message_id) == ("sent", "wamid.9")
    # A worker that gets the request afterwards finds it sent and sends nothing.
    assert isinstance(await store.claim(template("n9"), "w1", now=T0, ttl=60), Settled)


async def test_records_lists_every_notification(store: NotificationStore) -> None:
    assert await store.records() == []
    for nid in ("a", "b", "c"):
        await store.claim(template(nid), "w1", now=T0, ttl=60)
    assert sorted(r.notification_id for r in await store.records()) == ["a", "b", "c"]

"""The notifier against a real nats-server and a fake Cloud API over real HTTP.

Each test publishes requests as the product does, runs a :class:`Notifier` and reads
the outcome from three places: what the fake API accepted, the contract events, and
the store's records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors import RealClock
from actors.nats import NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.notify import (
    Backoff,
    LogProvider,
    NotificationStore,
    Notifier,
    RateLimiter,
    WebhookProvider,
    WhatsAppProvider,
)
from iceshop.notify.http11 import HTTPServer, Request, Response
from iceshop.notify.provider import Provider
from iceshop.notify.store import StatusUpdate
from iceshop.observability.tracing import OtelTracer
from iceshop.product.notifications import notification_payload, notification_subject
from iceshop.wire import EVENT_STREAM
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import EventLog, ensure_streams, make_request, phone, publish_requests

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@dataclass
class Rig:
    transport: NatsTransport
    store: NotificationStore
    notifier: Notifier
    events: EventLog


@asynccontextmanager
async def notifier_on(
    url: str,
    provider: Provider,
    *,
    rate: float = 10_000.0,
    spacing: float = 0.0,
    max_attempts: int = 8,
    concurrency: int = 16,
    claim_ttl: float = 5.0,
    **kw: Any,
) -> AsyncIterator[Rig]:
    async with NatsTransport(url) as transport:
        await ensure_streams(transport)
        events = EventLog()
        await events.subscribe(transport)
        store = NotificationStore(transport)
        notifier = Notifier(
            transport,
            store,
            provider,
            limiter=RateLimiter(RealClock(), rate_per_s=rate, spacing_s=spacing),
            backoff=Backoff(base=0.05, cap=0.2, max_attempts=max_attempts),
            claim_ttl=claim_ttl,
            concurrency=concurrency,
            fetch_timeout=0.5,
            **kw,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(notifier.run)
            yield Rig(transport, store, notifier, events)
            tg.cancel_scope.cancel()


@asynccontextmanager
async def whatsapp(api: FakeCloudApi) -> AsyncIterator[WhatsAppProvider]:
    async with WhatsAppProvider(
        token=api.token,
        phone_number_id=api.phone_number_id,
        api_base=api.base,
        api_version=api.version,
        timeout=5.0,
    ) as provider:
        yield provider


async def test_each_request_is_sent_once_and_announced(nats_server: NatsServer) -> None:
    requests = [make_request(i, locale="en" if i % 3 == 0 else "tr") for i in range(30)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        await publish_requests(rig.transport, requests)
        with anyio.fail_after(15):
            await rig.events.wait_for(30)
            await rig.notifier.idle()

        assert sorted(api.accepted_ids()) == [r.notification_id for r in requests]
        by_id = {a.notification_id: a for a in api.accepted}
        assert by_id["n00003"].language == "en"
        assert by_id["n00004"].language == "tr"
        assert by_id["n00004"].to == "905500000004"
        assert by_id["n00004"].params[1] == "1.299,00 TL"

        sent = rig.events.of_type("sent")
        assert len(sent) == 30
        first = next(e for e in sent if e["data"]["notification_id"] == "n00004")
        assert first["event_id"] == "notification.n00004.2"
        assert first["seq"] == 2
        assert first["data"]["message_id"] == by_id["n00004"].message_id
        assert first["data"]["channel"] == "whatsapp"
        assert first["data"]["attempts"] == 1
        assert set(rig.events.subjects) == {
            f"iceshop.events.notification.{r.notification_id}.sent" for r in requests
        }

        records = {r.notification_id: r for r in await rig.store.records()}
        assert {r.state for r in records.values()} == {"sent"}
        assert records["n00004"].message_id == by_id["n00004"].message_id
        assert rig.notifier.stats.sent == 30


async def test_duplicate_requests_are_not_sent_again(nats_server: NatsServer) -> None:
    requests = [make_request(i) for i in range(5)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        await publish_requests(rig.transport, requests)
        with anyio.fail_after(10):
            await rig.events.wait_for(5)
            await rig.notifier.idle()
        # The same requests again, past the stream's de-duplication (a replay, say).
        await publish_requests(rig.transport, requests, msg_id_suffix=".again")
        with anyio.fail_after(10):
            await rig.events.wait_until(lambda log: len(log.events) >= 10)
            await rig.notifier.idle()
        assert len(api.accepted) == 5
        assert rig.notifier.stats.settled == 5
        # The verdicts were announced again with the same ids: stored once.
        info = await rig.transport.jetstream().stream_info(EVENT_STREAM)
        assert info.state.messages == 5


async def test_rate_limit_storms_are_retried_and_the_rate_is_kept(
    nats_server: NatsServer,
) -> None:
    rate = 40.0
    requests = [make_request(i) for i in range(60)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, rate=rate) as rig,
    ):
        api.fail_next(15, status=429, code=130429)
        started = time.monotonic()
        await publish_requests(rig.transport, requests)
        with anyio.fail_after(30):
            await rig.events.wait_for(60)
            await rig.notifier.idle()
        elapsed = time.monotonic() - started
        # By id rather than records(): listing a bucket's keys is a watch that may come
        # back short on a loaded machine.
        records = [await rig.store.get(r.notification_id) for r in requests]

    assert sorted(api.accepted_ids()) == [r.notification_id for r in requests]
    assert len(api.errors) == 15
    assert len(api.arrivals) == 75
    assert rig.notifier.stats.retried == 15
    # Slots are at least 1 / rate apart, so a half-open second of departures holds at
    # most `rate`; the (rate + 1)-th send after one leaves exactly a second later and
    # latency that varies may pull its arrival inside the second (a tolerance of one); a
    # second extra would need the latency to vary by more than 1 / rate (25 ms).
    assert api.max_in_window(1.0) <= rate + 1, api.per_second()
    assert elapsed >= (75 - 1) / rate * 0.95
    assert all(r is not None for r in records)
    retried = [r for r in records if r is not None and len(r.attempts) > 1]
    assert retried
    assert all(r.attempts[0].outcome == "retry" for r in retried)
    assert all(r.attempts[0].code == 130429 for r in retried)
    assert all(r.state == "sent" for r in retried)


async def test_permanent_errors_are_not_retried(nats_server: NatsServer) -> None:
    requests = [make_request(i) for i in range(6)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        api.fail_recipient(phone(2), code=131026, message="Message undeliverable")
        api.fail_recipient(phone(4), code=131047, message="Re-engagement message")
        await publish_requests(rig.transport, requests)
        with anyio.fail_after(10):
            await rig.events.wait_for(6)
            await rig.notifier.idle()
        record = await rig.store.get("n00002")

    assert [to for to, _, _ in api.errors].count(phone(2).removeprefix("+")) == 1
    assert [to for to, _, _ in api.errors].count(phone(4).removeprefix("+")) == 1
    failed = {e["data"]["notification_id"]: e for e in rig.events.of_type("failed")}
    assert set(failed) == {"n00002", "n00004"}
    assert failed["n00002"]["data"]["error_code"] == 131026
    assert "undeliverable" in failed["n00002"]["data"]["reason"]
    assert failed["n00004"]["data"]["error_code"] == 131047
    assert len(rig.events.of_type("sent")) == 4
    assert record is not None
    assert (record.state, record.outcome, len(record.attempts)) == ("failed", "failed", 1)


async def test_retries_end_in_a_dead_letter(nats_server: NatsServer) -> None:
    requests = [make_request(i) for i in range(3)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, max_attempts=3) as rig,
    ):
        api.fail_recipient(phone(1), status=503, code=2, message="Service unavailable")
        await publish_requests(rig.transport, requests)
        with anyio.fail_after(10):
            await rig.events.wait_for(3)
            await rig.notifier.idle()
        record = await rig.store.get("n00001")

    assert [to for to, _, _ in api.errors] == [phone(1).removeprefix("+")] * 3
    (dead,) = rig.events.of_type("dead")
    assert dead["data"]["notification_id"] == "n00001"
    assert dead["data"]["attempts"] == 3
    assert dead["data"]["error_code"] == 2
    assert record is not None
    assert record.state == "dead"
    assert [a.outcome for a in record.attempts] == ["retry", "retry", "dead"]
    assert sorted(api.accepted_ids()) == ["n00000", "n00002"]


async def test_an_opt_out_is_refused_and_a_request_before_the_field_is_sent(
    nats_server: NatsServer,
) -> None:
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        await publish_requests(
            rig.transport, [make_request(i) for i in range(3)], extra={"whatsapp_opt_in": False}
        )
        # As the product publishes them: with the buyer's opt-in.
        await publish_requests(rig.transport, [make_request(i) for i in range(3, 5)])
        # Without the field: queued by a product before it, which recorded requests for
        # opted-in buyers only (an upgrade with requests in the queue): sent.
        await publish_requests(
            rig.transport, [make_request(i) for i in range(5, 7)], drop=("whatsapp_opt_in",)
        )
        with anyio.fail_after(10):
            await rig.events.wait_for(7)
            await rig.notifier.idle()
        record = await rig.store.get("n00000")

    assert sorted(api.accepted_ids()) == ["n00003", "n00004", "n00005", "n00006"]
    assert len(api.arrivals) == 4
    refused = {e["data"]["notification_id"]: e for e in rig.events.of_type("failed")}
    assert sorted(refused) == ["n00000", "n00001", "n00002"]
    assert {e["data"]["reason"] for e in refused.values()} == {"buyer has not opted in"}
    assert all(e["data"]["attempts"] == 0 for e in refused.values())
    assert rig.notifier.stats.refused == 3
    assert record is not None
    assert (record.state, record.outcome, record.attempts) == ("failed", "failed", ())


async def test_slow_answers_and_retry_after_are_waited_for(nats_server: NatsServer) -> None:
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, concurrency=4) as rig,
    ):
        api.delay_s = 0.3
        api.fail_next(1, status=429, code=130429, retry_after="1")
        await publish_requests(rig.transport, [make_request(i) for i in range(8)])
        with anyio.fail_after(15):
            await rig.events.wait_for(8)
            await rig.notifier.idle()

    assert sorted(api.accepted_ids()) == [f"n{i:05d}" for i in range(8)]
    (storm_to, _, _) = api.errors[0]
    retried = next(a for a in api.accepted if a.to == storm_to)
    first_arrival = min(api.arrivals)
    # The retry came no sooner than the provider's Retry-After (after a 0.3 s answer).
    assert retried.arrived - first_arrival >= 1.0 + 0.3
    assert all(a.accepted - a.arrived >= 0.3 for a in api.accepted)


async def test_log_provider_writes_what_would_be_sent(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "notifications.jsonl"
    async with (
        LogProvider(path, keep=3) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        await publish_requests(rig.transport, [make_request(i, locale="en") for i in range(5)])
        with anyio.fail_after(10):
            await rig.events.wait_for(5)
            await rig.notifier.idle()
    lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    assert sorted(line["notification_id"] for line in lines) == [f"n{i:05d}" for i in range(5)]
    assert lines[0]["text"].startswith("Flash sale on: kettle at TRY 1,299.00 each")
    assert len(provider.messages) == 3
    assert provider.sent == 5
    assert {e["data"]["channel"] for e in rig.events.events} == {"log"}


async def test_webhook_provider_posts_json_and_classifies_answers(
    nats_server: NatsServer,
) -> None:
    posts: list[tuple[dict[str, Any], bytes | None]] = []
    answers = {phone(1).removeprefix("+"): [500, 200], phone(2).removeprefix("+"): [400]}

    async def handle(request: Request) -> Response:
        body = msgspec.json.decode(request.body)
        posts.append((body, request.header(b"idempotency-key")))
        script = answers.get(body["to"].removeprefix("+"), [200])
        status = script.pop(0) if len(script) > 1 else script[0]
        return Response(status=status, body=b'{"id": "gw-1"}' if status == 200 else b"no")

    server = HTTPServer(handle)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        async with (
            WebhookProvider(f"http://127.0.0.1:{port}/hook") as provider,
            notifier_on(nats_server.url, provider) as rig,
        ):
            await publish_requests(rig.transport, [make_request(i) for i in range(3)])
            with anyio.fail_after(10):
                await rig.events.wait_for(3)
                await rig.notifier.idle()
        tg.cancel_scope.cancel()

    assert len(posts) == 4  # one retry after the 500
    assert {key for _, key in posts} == {b"n00000", b"n00001", b"n00002"}
    assert posts[0][0]["template"] == "iceshop_flash_window"
    kinds = {e["data"]["notification_id"]: e["type"] for e in rig.events.events}
    assert kinds == {"n00000": "sent", "n00001": "sent", "n00002": "failed"}
    sent = next(e for e in rig.events.events if e["data"]["notification_id"] == "n00000")
    assert sent["data"]["message_id"] == "gw-1"


async def test_a_poison_request_is_dropped_without_blocking_others(
    nats_server: NatsServer,
) -> None:
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        js = rig.transport.jetstream()
        await js.publish("iceshop.notifications.bad.requested", b"not json")
        await publish_requests(rig.transport, [make_request(1)])
        with anyio.fail_after(10):
            await rig.events.wait_for(1)
            await rig.notifier.idle()
    assert api.accepted_ids() == ["n00001"]
    assert rig.notifier.stats.received == 2


async def test_two_notifiers_share_the_work_without_sending_twice(
    nats_server: NatsServer,
) -> None:
    # Without a send lease both consume at once: the claims alone keep them apart.
    requests = [make_request(i) for i in range(40)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, concurrency=4, lease_ttl=None) as one,
        notifier_on(nats_server.url, provider, concurrency=4, lease_ttl=None) as two,
    ):
        api.delay_s = 0.02
        await publish_requests(one.transport, requests)
        with anyio.fail_after(15):
            await one.events.wait_for(40)
            await one.notifier.idle()
    assert sorted(api.accepted_ids()) == [r.notification_id for r in requests]
    assert one.notifier.stats.sent + two.notifier.stats.sent == 40
    assert one.notifier.stats.sent > 0
    assert two.notifier.stats.sent > 0


async def test_stopping_finishes_sends_in_flight_and_leaves_no_claim(
    nats_server: NatsServer,
) -> None:
    requests = [make_request(i) for i in range(4)]
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        NatsTransport(nats_server.url) as transport,
    ):
        api.delay_s = 0.5
        # A slow provider and 2 sends/s: one send in flight, the others waiting.
        async with notifier_on(nats_server.url, provider, rate=2.0, claim_ttl=2) as first:
            await publish_requests(first.transport, requests)
            with anyio.fail_after(10):
                await api.wait_until(lambda a: len(a.arrivals) == 1)
        # Left: the notifier was cancelled while its first send was in flight.
        assert len(api.accepted) == 1
        store = NotificationStore(transport)
        await store.open()
        (in_flight,) = api.accepted
        record = await store.get(in_flight.notification_id or "")
        assert record is not None
        assert (record.state, len(record.attempts)) == ("sent", 1)  # recorded, not cut off
        others = [await store.get(r.notification_id) for r in requests[1:]]
        # The claims of sends that had not started were given back, not left to expire.
        assert all(r is None or r.state == "retrying" for r in others), others

        async with notifier_on(nats_server.url, provider, claim_ttl=2) as second:
            with anyio.fail_after(10):
                await second.events.wait_for(3)
                await second.notifier.idle()
            final = await second.store.records()
    assert sorted(api.accepted_ids()) == [r.notification_id for r in requests]
    # Nothing had to be taken over as "in doubt": every claim was given back.
    assert [a.outcome for r in final for a in r.attempts] == ["sent"] * 4


async def test_a_failure_reported_after_sent_is_announced_once(nats_server: NatsServer) -> None:
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider) as rig,
    ):
        await publish_requests(rig.transport, [make_request(0), make_request(1)])
        with anyio.fail_after(10):
            await rig.events.wait_for(2)
            await rig.notifier.idle()
        by_id = {a.notification_id: a for a in api.accepted}
        failed = StatusUpdate(
            message_id=by_id["n00000"].message_id,
            status="failed",
            at=1_800_000_100.0,
            recipient=phone(0).removeprefix("+"),
            error_code=131026,
            error_title="Message undeliverable",
        )
        delivered = StatusUpdate(
            message_id=by_id["n00001"].message_id,
            status="delivered",
            at=1_800_000_100.0,
            recipient=phone(1).removeprefix("+"),
        )
        # The callback, a duplicate of it (WhatsApp retries), and an ordinary status.
        for update in (failed, failed, delivered, failed):
            await rig.notifier.apply_status(update)
        with anyio.fail_after(10):
            await rig.events.wait_until(lambda log: len(log.of_type("failed")) >= 1)
        await rig.transport.flush()
        record = await rig.store.get("n00000")
        info = await rig.transport.jetstream().stream_info(EVENT_STREAM)

    (late,) = rig.events.of_type("failed")
    assert late["event_id"] == "notification.n00000.3"
    assert late["seq"] == 3
    assert late["at"] == "2027-01-15T08:01:40.000Z"
    assert late["data"]["error_code"] == 131026
    assert late["data"]["reason"] == "Message undeliverable"
    assert late["data"]["message_id"] == by_id["n00000"].message_id
    assert rig.events.subjects.count("iceshop.events.notification.n00000.failed") == 1
    assert info.state.messages == 3  # two verdicts and one late failure
    assert record is not None
    assert (record.state, record.outcome, record.failure_announced) == ("failed", "sent", True)


async def test_each_notification_is_a_span_under_the_requests_trace(
    nats_server: NatsServer,
) -> None:
    exporter = InMemorySpanExporter()
    tracer = OtelTracer.create(exporter, batch=False, node_id="t1")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    async with (
        FakeCloudApi() as api,
        whatsapp(api) as provider,
        notifier_on(nats_server.url, provider, tracer=tracer) as rig,
    ):
        js = rig.transport.jetstream()
        event_id, body = notification_payload(make_request(0))
        await js.publish(
            notification_subject("n00000", "iceshop"),
            body,
            headers={"Nats-Msg-Id": event_id, "traceparent": parent},
        )
        await publish_requests(rig.transport, [make_request(1)])  # no traceparent
        with anyio.fail_after(10):
            await rig.events.wait_for(2)
            await rig.notifier.idle()
    spans = {s.attributes["notification.id"]: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["n00000", "n00001"]
    child = spans["n00000"]
    assert child.name == "notify"
    assert format(child.context.trace_id, "032x") == trace_id
    assert child.parent is not None and format(child.parent.span_id, "016x") == parent[36:52]
    root = spans["n00001"]
    assert root.parent is None
    assert format(root.context.trace_id, "032x") != trace_id
    assert len(api.accepted) == 2
